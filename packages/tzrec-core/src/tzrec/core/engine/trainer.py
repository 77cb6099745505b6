"""Train and evaluate any registered model on any registered dataset.

The engine is model-agnostic: the dataset class comes from the ``datasets`` registry (by
``data_config.dataset_type``), the model class from the ``models`` registry (by the config's
model oneof). A model provides ``predict``, ``loss``, ``update_metric``, ``compute_metric``
and ``reset_metric`` (see ``tzrec.models.models.base``).

Embedding tables are sharded by torchrec's ``DistributedModelParallel`` in every run, a
single CPU process included (gloo with world size 1), so one code path covers
``tzrec train`` and ``torchrun --nproc_per_node=N -m tzrec.core.cli train``. Embedding
tables are updated by fused optimizers applied in backward; dense parameters by the dense
optimizer. Checkpoints are written with ``torch.distributed.checkpoint`` into a temporary
directory that rank 0 renames into place once complete, so a run killed mid-save resumes
from the previous checkpoint, and a checkpoint written by N processes loads in one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tzrec.core import plugins
from tzrec.core.config import provided_by, save_message, which_oneof
from tzrec.core.engine.checkpoint import CKPT_PREFIX, DONE_FILE, TMP_PREFIX, CheckpointManager
from tzrec.core.engine.optim import (
    build_lr_scheduler,
    clip_gradients,
    dense_optimizer_class_and_kwargs,
    gradient_clipping_kwargs,
    sparse_optimizer_class_and_kwargs,
)
from tzrec.core.engine.ranks import is_rank_zero
from tzrec.core.engine.summary import (
    TRAIN_EVAL_RESULT_FILENAME,
    ProgressReporter,
    Summary,
    write_eval_result,
)
from tzrec.core.errors import ConfigError
from tzrec.protos import data_pb2, pipeline_pb2

logger = logging.getLogger(__name__)

WARMUP_STEPS = 10
PIPELINE_CONFIG_FILENAME = "pipeline.config"
STATE_DIR = "state"
EXTRA_FILE = "extra.json"


class TrainWrapper(nn.Module):
    """``forward(batch) -> (total_loss, (losses, predictions, batch))`` around a model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[torch.Tensor, tuple[dict, dict, Any]]:
        """Predict, compute the named losses and their sum."""
        predictions = self.model.predict(batch)
        losses = self.model.loss(predictions, batch)
        total = torch.stack([v.reshape(()) for v in losses.values()]).sum()
        return total, (
            {k: v.detach() for k, v in losses.items()},
            {k: v.detach() for k, v in predictions.items()},
            batch,
        )


# -- process group ------------------------------------------------------------------------


def init_distributed() -> torch.device:
    """Join (or create, for a single process) the process group; return this rank's device."""
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if world == 1:
            # a single process needs no network rendezvous: an in-process store avoids
            # racing other jobs for a free port
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend, rank=rank, world_size=world)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def busy_cores() -> int:
    """Cores other processes keep busy: the whole part of the 1-minute load average."""
    try:
        return int(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - platforms without getloadavg
        return 0


def fit_threads(num_workers: int) -> int:
    """Keep compute threads plus reader worker processes within the machine's free cores.

    OpenMP threads spin while they wait; with more runnable threads than cores (reader
    workers and other busy processes included) a step gets several times slower: HSTUMatch's
    example trains at 21 steps/s with 2 threads on 2 idle cores but 5 steps/s when one other
    process is busy, and 21 with 1 thread. So cores the load average shows busy are left
    out. ``TZREC_NUM_THREADS`` overrides.
    """
    wanted = os.environ.get("TZREC_NUM_THREADS")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    busy = min(busy_cores(), cores - 1)
    threads = int(wanted) if wanted else max(1, cores - busy - max(num_workers, 0))
    threads = min(threads, torch.get_num_threads()) if not wanted else threads
    if threads != torch.get_num_threads():
        logger.info(
            "using %d compute thread(s) beside %d reader worker(s) on %s core(s), %d busy",
            threads,
            num_workers,
            cores,
            busy,
        )
        torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (fixed seeds give identical first losses on CPU)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# -- building -----------------------------------------------------------------------------


def dataset_class(config: pipeline_pb2.EasyRecConfig) -> Any:
    """The registered reader for ``data_config.dataset_type``."""
    name = data_pb2.DatasetType.Name(config.data_config.dataset_type)
    return plugins.get("datasets", name)


def build_dataset(
    config: pipeline_pb2.EasyRecConfig,
    features: list[Any],
    input_path: str,
    mode: str,
    **kwargs: Any,
) -> Any:
    """A dataset of the configured type over ``input_path``."""
    if not input_path:
        raise ConfigError(f"no input path for {mode}: set the {mode}_input_path field or flag")
    return dataset_class(config)(config.data_config, features, input_path, mode=mode, **kwargs)


def build_model(config: pipeline_pb2.EasyRecConfig, features: list[Any]) -> nn.Module:
    """The configured model, built from the features a dataset resolved."""
    mc = config.model_config
    chosen = which_oneof(mc, "model")
    if chosen is None:
        raise ConfigError("model_config sets no model")
    cls = plugins.get("models", chosen[0], provided_by(mc, chosen[0]))
    return cls(
        mc,
        features,
        list(config.data_config.label_fields),
        sample_weights=list(config.data_config.sample_weight_fields),
    )


def _embedding_modules(module: nn.Module) -> list[nn.Module]:
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    return [
        m for m in module.modules() if isinstance(m, EmbeddingBagCollection | EmbeddingCollection)
    ]


def _sharding_plan(module: nn.Module, device: torch.device) -> Any:
    """A plan that never shards a table data-parallel.

    With small tables the planner prefers data-parallel, whose tables the in-backward
    (fused) optimizer does not update; table-wise/row-wise/column-wise use fused kernels.
    """
    from torchrec.distributed.comm import get_local_size
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.distributed.types import ShardingType

    tables: set[str] = set()
    for emb in _embedding_modules(module):
        configs = (
            emb.embedding_bag_configs()
            if hasattr(emb, "embedding_bag_configs")
            else emb.embedding_configs()
        )
        tables.update(c.name for c in configs)
    allowed = [
        ShardingType.TABLE_WISE.value,
        ShardingType.ROW_WISE.value,
        ShardingType.COLUMN_WISE.value,
    ]
    world = dist.get_world_size()
    planner = EmbeddingShardingPlanner(
        topology=Topology(
            world_size=world,
            local_world_size=get_local_size(world),
            compute_device=device.type,
        ),
        constraints={name: ParameterConstraints(sharding_types=allowed) for name in tables},
    )
    return planner.collective_plan(module, get_default_sharders(), dist.GroupMember.WORLD)


@dataclass
class TrainState:
    """What resuming needs besides model and optimizer tensors."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


class Engine:
    """A model wrapped for (distributed) training: DMP, optimizers, schedules, checkpoints.

    Args:
        config: the pipeline config.
        model: the model (from :func:`build_model`).
        device: from :func:`init_distributed`.
        train: build optimizers (False for evaluation only).
    """

    def __init__(
        self,
        config: pipeline_pb2.EasyRecConfig,
        model: nn.Module,
        device: torch.device,
        train: bool,
    ) -> None:
        from torch.distributed.optim import _apply_optimizer_in_backward
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        self.config = config
        self.model = model
        self.device = device
        tc = config.train_config
        wrapper = TrainWrapper(model)
        if train:
            if (
                not tc.HasField("sparse_optimizer")
                or which_oneof(tc.sparse_optimizer, "optimizer") is None
            ):
                raise ConfigError("train_config.sparse_optimizer: set an optimizer for embeddings")
            if (
                not tc.HasField("dense_optimizer")
                or which_oneof(tc.dense_optimizer, "optimizer") is None
            ):
                raise ConfigError(
                    "train_config.dense_optimizer: set an optimizer for dense weights"
                )
            sparse_cls, sparse_kwargs = sparse_optimizer_class_and_kwargs(tc.sparse_optimizer)
            sparse_schedule = tc.sparse_optimizer.WhichOneof("learning_rate")
            if sparse_schedule not in (None, "constant_learning_rate"):
                logger.warning(
                    "train_config.sparse_optimizer.%s is not applied yet: embedding tables "
                    "train with the constant lr %s",
                    sparse_schedule,
                    sparse_kwargs.get("lr"),
                )
            for emb in _embedding_modules(wrapper):
                _apply_optimizer_in_backward(sparse_cls, emb.parameters(), sparse_kwargs)
        self.dmp = DistributedModelParallel(
            wrapper, device=device, plan=_sharding_plan(wrapper, device)
        )
        self.optimizer: Any = None
        self.schedulers: list[Any] = []
        self.clip_config: Any = None
        if train:
            dense_cls, dense_kwargs = dense_optimizer_class_and_kwargs(tc.dense_optimizer)
            dense_params = dict(in_backward_optimizer_filter(self.dmp.named_parameters()))
            dense = KeyedOptimizerWrapper(dense_params, lambda ps: dense_cls(ps, **dense_kwargs))
            self.optimizer = CombinedOptimizer([self.dmp.fused_optimizer, dense])
            self.schedulers = [build_lr_scheduler(dense, tc.dense_optimizer)]
            if tc.HasField("grad_clipping") and gradient_clipping_kwargs(tc.grad_clipping):
                self.clip_config = tc.grad_clipping

    def learning_rates(self) -> dict[str, float]:
        """Current dense learning rate(s)."""
        if not self.schedulers:
            return {}
        return {f"g{i}": lr for i, lr in enumerate(self.schedulers[0].get_last_lr())}

    def train_step(self, batch: Any) -> dict[str, float]:
        """Forward, backward, clip and step; returns the batch's losses as floats."""
        self.dmp.train()
        batch = batch.to(self.device)
        self.optimizer.zero_grad()
        loss, (losses, _, _) = self.dmp(batch)
        loss.backward()
        if self.clip_config is not None:
            params = [p for p in self.dmp.parameters() if p.grad is not None]
            clip_gradients(params, self.clip_config)
        self.optimizer.step()
        for sched in self.schedulers:
            if not getattr(sched, "by_epoch", False):
                sched.step()
        return {k: float(v) for k, v in losses.items()}

    def evaluate(
        self, dataloader: Any, max_steps: int = 0, desc: str = "Evaluating"
    ) -> dict[str, float]:
        """Metrics over ``dataloader`` (synchronised across ranks by the metrics)."""
        self.dmp.eval()
        self.model.reset_metric()
        progress = ProgressReporter(desc)
        steps = 0
        with torch.no_grad():
            for batch in lockstep(dataloader, "evaluation"):
                _, (losses, predictions, batch) = self.dmp(batch.to(self.device))
                self.model.update_metric(predictions, batch)
                steps += 1
                progress.update(steps, losses)
                if max_steps and steps >= max_steps:
                    break
        progress.close()
        return self.model.compute_metric()

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Model (and optimizer) tensors for ``torch.distributed.checkpoint``."""
        state: dict[str, Any] = {"model": self.dmp.state_dict()}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def save(self, manager: CheckpointManager, state: TrainState) -> Path:
        """Write ``model.ckpt-<step>`` atomically (all ranks take part)."""
        import torch.distributed.checkpoint as dcp

        final = manager.path_for(state.global_step)
        tmp = manager.model_dir / f"{TMP_PREFIX}{final.name}"
        if is_rank_zero():
            manager.model_dir.mkdir(parents=True, exist_ok=True)
            manager.remove_stale_tmp()
            tmp.mkdir()
        _barrier()
        dcp.save(self.state_dict(), checkpoint_id=str(tmp / STATE_DIR))
        _barrier()
        if is_rank_zero():
            (tmp / EXTRA_FILE).write_text(json.dumps(state.__dict__))
            with open(tmp / DONE_FILE, "w", encoding="utf-8") as f:
                json.dump({"step": state.global_step, "files": [STATE_DIR, EXTRA_FILE]}, f)
                f.flush()
                os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            manager.prune()
            logger.info("saved checkpoint %s", final)
        _barrier()
        return final

    def restore(self, path: Path, with_optimizer: bool = True) -> TrainState:
        """Load model (and optimizer) tensors and the train state from a checkpoint."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        state = {"model": self.dmp.state_dict()}
        if with_optimizer and self.optimizer is not None:
            self.optimizer.init_state()
            state["optimizer"] = self.optimizer.state_dict()
        try:
            dcp.load(state, checkpoint_id=str(path / STATE_DIR))
        except (Exception, CheckpointException) as e:  # the latter is a BaseException
            raise ConfigError(
                f"{path}: checkpoint does not match this model ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:300]}); was it trained with a different config?"
            ) from None
        self.dmp.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        extra_file = path / EXTRA_FILE
        extra = json.loads(extra_file.read_text()) if extra_file.is_file() else {}
        state_ = TrainState(**extra)
        self.set_schedule_step(state_.global_step, state_.epoch)
        logger.info("restored %s", path)
        return state_

    def end_epoch(self) -> None:
        """Advance the schedules configured with ``by_epoch``."""
        for sched in self.schedulers:
            if getattr(sched, "by_epoch", False):
                sched.step()

    def set_schedule_step(self, step: int, epoch: int = 0) -> None:
        """Move the schedules to ``step`` (``epoch`` for ``by_epoch`` ones): lr is a function."""
        for sched in self.schedulers:
            sched.last_epoch = epoch if getattr(sched, "by_epoch", False) else step
            for group, lr in zip(sched.optimizer.param_groups, sched.get_lr(), strict=True):
                group["lr"] = lr
            sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]

    def fine_tune_from(self, path: Path) -> dict[str, list[str]]:
        """Initialise the weights that another checkpoint has (same name and shape).

        Returns the parameter names that were ``missing`` from the checkpoint or had a
        ``mismatched`` shape (both keep their fresh initialisation, and are logged).
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import DefaultLoadPlanner

        storage = str(path / STATE_DIR)
        try:
            meta = dcp.FileSystemReader(storage).read_metadata().state_dict_metadata
        except Exception as e:
            raise ConfigError(f"{path}: not a readable tzrec checkpoint ({e})") from None
        keep: dict[str, Any] = {}
        report: dict[str, list[str]] = {"missing": [], "mismatched": []}
        for name, value in self.dmp.state_dict().items():
            saved = meta.get(f"model.{name}")
            if saved is None:
                report["missing"].append(name)
                continue
            size = getattr(saved, "size", None)
            if size is not None and hasattr(value, "size") and tuple(size) != tuple(value.size()):
                report["mismatched"].append(name)
                continue
            keep[name] = value
        if not keep:
            raise ConfigError(f"{path}: shares no weights with this model; nothing to fine-tune")
        dcp.load(
            {"model": keep},
            checkpoint_id=storage,
            planner=DefaultLoadPlanner(allow_partial_load=True),
        )
        self.dmp.load_state_dict(keep, strict=False)
        logger.info(
            "fine-tuning from %s: %d tensors loaded, %d missing there, %d with another shape",
            path,
            len(keep),
            len(report["missing"]),
            len(report["mismatched"]),
        )
        for kind, names in report.items():
            if names:
                logger.info("  %s: %s", kind, ", ".join(names))
        return report


# -- loops --------------------------------------------------------------------------------


def lockstep(batches: Any, what: str) -> Iterator[Any]:
    """Yield batches while every rank still has one.

    Sharded embedding lookups are collectives, so all ranks must run the same number of
    steps; when one rank's shard runs out the others stop too, and the batches they had
    left are counted and logged (never dropped silently).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        yield from batches
        return
    it = iter(batches)
    # NCCL groups have no CPU backend: the flag lives where the collectives run
    device = (
        torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    )
    flag = torch.zeros(1, dtype=torch.int64, device=device)
    while True:
        batch = next(it, None)
        flag.fill_(0 if batch is None else 1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag) == 0:
            if batch is not None:
                logger.warning(
                    "rank %d: %s stopped before the end of this rank's shard because another "
                    "rank's shard ran out (ranks must step together); rows left unread here",
                    dist.get_rank(),
                    what,
                )
            return
        yield batch


def _batches(dataset: Any, epoch: int, skip: int) -> Iterator[Any]:
    dataset.set_epoch(epoch)
    for i, batch in enumerate(lockstep(dataset.make_dataloader(), f"training epoch {epoch}")):
        if i < skip:
            continue
        yield batch


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}:{v:.6f}" for k, v in metrics.items())


def train_and_evaluate(
    config: pipeline_pb2.EasyRecConfig,
    continue_train: bool = False,
    fine_tune_checkpoint: str | None = None,
    ignore_restore_optimizer: bool = False,
) -> dict[str, Any]:
    """Train with evaluation at every checkpoint; return the final step and metrics."""
    device = init_distributed()
    tc = config.train_config
    seed_everything(int(os.environ.get("TZREC_SEED", "2024")))
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        fit_threads(int(config.data_config.num_workers) * local + (local - 1))
    model_dir = Path(config.model_dir)
    manager = CheckpointManager(model_dir, tc.keep_checkpoint_max)
    latest, _ = manager.latest()
    if latest is not None and not continue_train:
        raise ConfigError(
            f"{model_dir} already holds checkpoints ({latest.name}); pass --continue_train to "
            "resume, or choose another --model_dir"
        )
    features = dataset_class(config).create_features(config.feature_configs, config.data_config)
    train_ds = build_dataset(config, features, config.train_input_path, "train")
    eval_ds = (
        build_dataset(config, features, config.eval_input_path, "eval")
        if config.eval_input_path
        else None
    )
    model = build_model(config, train_ds.features)
    engine = Engine(config, model, device, train=True)
    if is_rank_zero():
        model_dir.mkdir(parents=True, exist_ok=True)
        save_message(config, model_dir / PIPELINE_CONFIG_FILENAME)
    state = TrainState()
    if continue_train and latest is not None:
        state = engine.restore(latest, with_optimizer=not ignore_restore_optimizer)
    else:
        ft = fine_tune_checkpoint or tc.fine_tune_checkpoint
        if ft:
            try:
                ft_path = CheckpointManager(ft, is_writer=False).resolve(ft)
            except FileNotFoundError as e:
                raise ConfigError(f"fine_tune_checkpoint: {e}") from None
            engine.fine_tune_from(ft_path)
    num_epochs = int(tc.num_epochs) if tc.HasField("num_epochs") else (0 if tc.num_steps else 1)
    num_steps = int(tc.num_steps)
    save_steps = int(tc.save_checkpoints_steps)
    save_epochs = int(tc.save_checkpoints_epochs)
    log_steps = max(int(tc.log_step_count_steps), 1)
    summary = Summary(model_dir, enabled=is_rank_zero() and tc.use_tensorboard)
    result_file = model_dir / TRAIN_EVAL_RESULT_FILENAME
    eval_steps = int(config.eval_config.num_steps)
    last_metrics: dict[str, float] = {}
    last_saved = state.global_step if latest is not None and continue_train else -1

    def checkpoint_and_eval() -> None:
        nonlocal last_metrics, last_saved
        if last_saved == state.global_step:
            return
        engine.save(manager, state)
        last_saved = state.global_step
        if eval_ds is not None:
            last_metrics = engine.evaluate(
                eval_ds.make_dataloader(), eval_steps, f"Evaluating step {state.global_step}"
            )
            summary.log_eval(state.global_step, last_metrics)
            write_eval_result(result_file, state.global_step, last_metrics)
            logger.info(
                "rank %d eval at step %d: %s",
                dist.get_rank(),
                state.global_step,
                _format_metrics(last_metrics),
            )

    progress = ProgressReporter("Training", total=num_steps or None, start_step=state.global_step)
    start = time.monotonic()
    start_step = state.global_step
    # steady-state throughput excludes the first steps (reader start-up, lazy init)
    warm_step, warm_time = start_step + WARMUP_STEPS, 0.0
    done = bool(num_steps) and state.global_step >= num_steps
    try:
        epoch = state.epoch
        while not done and (num_epochs == 0 or epoch < num_epochs):
            skip = state.batches_in_epoch if epoch == state.epoch else 0
            state.epoch, state.batches_in_epoch = epoch, skip
            seen = 0
            for batch in _batches(train_ds, epoch, skip):
                seen += 1
                losses = engine.train_step(batch)
                state.global_step += 1
                state.batches_in_epoch += 1
                if state.global_step == warm_step:
                    warm_time = time.monotonic()
                progress.update(state.global_step, losses, engine.learning_rates())
                if state.global_step % log_steps == 0:
                    summary.log_train(state.global_step, losses, engine.learning_rates())
                if save_steps and state.global_step % save_steps == 0:
                    checkpoint_and_eval()
                if num_steps and state.global_step >= num_steps:
                    done = True
                    break
            if done:
                break
            if seen == 0 and skip == 0:
                break  # an empty epoch: more epochs would be empty too
            epoch += 1
            state.epoch, state.batches_in_epoch = epoch, 0
            engine.end_epoch()
            if save_epochs and epoch % save_epochs == 0:
                checkpoint_and_eval()
    finally:
        progress.close()
    loop_end = time.monotonic()
    elapsed = loop_end - start
    steps = state.global_step - start_step
    if steps == 0 and start_step == 0:
        raise ConfigError(
            f"{config.train_input_path}: training read no batches (empty input, or every row "
            "skipped)"
        )
    checkpoint_and_eval()
    summary.close()
    stats = getattr(train_ds, "summary", {})
    result = {
        "global_step": state.global_step,
        "steps_per_second": steps / elapsed if elapsed > 0 else 0.0,
        "steady_steps_per_second": (
            (state.global_step - warm_step) / (loop_end - warm_time)
            if warm_time and state.global_step > warm_step
            else None
        ),
        "metrics": last_metrics,
        "model_dir": str(model_dir),
        "checkpoint": str(manager.path_for(state.global_step)),
        "data": dict(stats) if isinstance(stats, dict) else {},
    }
    return result


def evaluate(
    config: pipeline_pb2.EasyRecConfig,
    checkpoint_path: str | None = None,
    eval_result_filename: str = "eval_result.txt",
) -> dict[str, Any]:
    """Evaluate a checkpoint (default: the latest in model_dir) on the eval input."""
    device = init_distributed()
    path = CheckpointManager(config.model_dir, is_writer=False).require(checkpoint_path, "evaluate")
    features = dataset_class(config).create_features(config.feature_configs, config.data_config)
    eval_ds = build_dataset(config, features, config.eval_input_path, "eval")
    model = build_model(config, eval_ds.features)
    engine = Engine(config, model, device, train=False)
    state = engine.restore(path, with_optimizer=False)
    metrics = engine.evaluate(eval_ds.make_dataloader(), int(config.eval_config.num_steps))
    write_eval_result(Path(config.model_dir) / eval_result_filename, state.global_step, metrics)
    return {"global_step": state.global_step, "metrics": metrics, "checkpoint": str(path)}


__all__ = [
    "CKPT_PREFIX",
    "Engine",
    "TrainState",
    "TrainWrapper",
    "build_dataset",
    "build_model",
    "evaluate",
    "init_distributed",
    "train_and_evaluate",
]
