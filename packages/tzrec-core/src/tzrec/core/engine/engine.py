"""A model wrapped for (distributed) training: sharding, optimizers, schedules, steps.

Embedding tables are sharded by torchrec's ``DistributedModelParallel`` in every run, a
single CPU process included (gloo with world size 1), so one code path covers
``tzrec train`` and ``torchrun --nproc_per_node=N -m tzrec.core.cli train``. Embedding
tables are updated by fused optimizers applied in backward; dense parameters by the dense
optimizer. Checkpoints go through :class:`tzrec.core.engine.checkpoint.CheckpointStore`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tzrec.core import amp, build
from tzrec.core.engine import checkpoint as ckpt
from tzrec.core.engine import guards
from tzrec.core.engine.distributed import capture_rng
from tzrec.core.engine.optim import clip_gradients, gradient_clipping_kwargs
from tzrec.core.engine.summary import ProgressReporter
from tzrec.core.errors import ConfigError
from tzrec.protos import pipeline_pb2

logger = logging.getLogger(__name__)


class TrainWrapper(nn.Module):
    """``forward(batch) -> (total_loss, (losses, predictions, batch))`` around a model.

    Its state names (``model.<name in the model>``) are the names checkpoints use.
    """

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


def _refuse_distributed_zch(module: nn.Module, world: int) -> None:
    """Refuse zch tables, in one line, under ``world`` > 1: they train in one process.

    torchrec shards a managed-collision table row-wise, one remapping state per rank
    (each rank's sorted raw ids of its rows); export and resume read one state per table,
    so a multi-process zch checkpoint would serve wrong rows.
    """
    from torchrec.modules.mc_embedding_modules import (
        BaseManagedCollisionEmbeddingCollection,
    )

    tables = sorted(
        name
        for sub in module.modules()
        if isinstance(sub, BaseManagedCollisionEmbeddingCollection)
        for name in sub._managed_collision_collection._managed_collision_modules
    )
    if tables:
        raise ConfigError(
            f"zch (zero-collision hashing) tables {', '.join(tables)} train in one "
            f"process only; this run has {world}: run without torchrun or remove zch "
            "from their features"
        )


def sharding_plan(module: nn.Module, device: torch.device) -> Any:
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
    for emb in build.embedding_modules(module):
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
    if world > 1:
        _refuse_distributed_zch(module, world)
    planner = EmbeddingShardingPlanner(
        topology=Topology(
            world_size=world,
            local_world_size=get_local_size(world),
            compute_device=device.type,
        ),
        # on CPU only the fused kernel exists (managed-collision sharders also offer UVM
        # kernels, which the CPU planner rejects)
        constraints={
            name: ParameterConstraints(
                sharding_types=allowed,
                compute_kernels=["fused"] if device.type == "cpu" else None,
            )
            for name in tables
        },
    )
    return planner.collective_plan(module, get_default_sharders(), dist.GroupMember.WORLD)


@dataclass
class TrainState:
    """What resuming needs besides tensors and generator states: the train position."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


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


def autocast_dtype(tc: Any) -> torch.dtype | None:
    """The autocast dtype of ``train_config.mixed_precision`` (None when unset).

    ``BF16`` / ``FP16`` run the forward under ``torch.autocast`` (CPU and CUDA). Loss
    scaling is ``train_config.grad_scaler``'s, independently of the precision (as upstream:
    FP16 without ``grad_scaler`` trains unscaled); see :func:`grad_scaler`.
    """
    value = tc.mixed_precision.strip().upper()
    if not value:
        return None
    if value == "BF16":
        return torch.bfloat16
    if value == "FP16":
        return torch.float16
    raise ConfigError(
        f"train_config.mixed_precision: expected BF16 or FP16, got {tc.mixed_precision!r}"
    )


def grad_scaler(tc: Any, device: torch.device) -> torch.amp.GradScaler | None:
    """``torch.amp.GradScaler`` from ``train_config.grad_scaler`` (None when unset).

    Its fields (``init_scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``)
    are the scaler's arguments. Dense gradients are unscaled by the scaler; the fused
    embedding tables by :mod:`tzrec.core.amp`'s gradient hooks.
    """
    if not tc.HasField("grad_scaler"):
        return None
    g = tc.grad_scaler
    if g.init_scale <= 0 or g.growth_factor <= 1 or not 0 < g.backoff_factor < 1:
        raise ConfigError(
            "train_config.grad_scaler: expected init_scale > 0, growth_factor > 1 and "
            f"0 < backoff_factor < 1, got {g.init_scale}, {g.growth_factor}, "
            f"{g.backoff_factor}"
        )
    return torch.amp.GradScaler(
        device.type,
        init_scale=g.init_scale,
        growth_factor=g.growth_factor,
        backoff_factor=g.backoff_factor,
        growth_interval=max(int(g.growth_interval), 1),
    )


def _float(predictions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating predictions as float32 (autocast may leave bfloat16) for metrics."""
    return {k: v.float() if v.is_floating_point() else v for k, v in predictions.items()}


def _all_ranks_true(flag: bool, like: torch.Tensor) -> bool:
    """True when ``flag`` holds on every rank (ranks must skip a step together)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=like.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(int(t))


def expected_batches(dataloader: Any, max_steps: int = 0, passes: int = 1) -> int | None:
    """Batches ``passes`` passes over ``dataloader`` give, capped by ``max_steps``.

    From ``dataset.num_batches()`` when the dataset can count them up front; else None.
    """
    count = getattr(getattr(dataloader, "dataset", None), "num_batches", None)
    per_pass = count() if callable(count) else None
    total = per_pass * passes if per_pass is not None else None
    if max_steps:
        return min(total, max_steps) if total is not None else max_steps
    return total


class Engine:
    """A model wrapped for (distributed) training: DMP, optimizers, schedules, checkpoints.

    Args:
        config: the pipeline config.
        model: the model (from :func:`tzrec.core.build.build_model`).
        device: from :func:`tzrec.core.engine.distributed.init_distributed`.
        train: build optimizers (False for evaluation only).
    """

    def __init__(
        self,
        config: pipeline_pb2.EasyRecConfig,
        model: nn.Module,
        device: torch.device,
        train: bool,
    ) -> None:
        from torchrec.distributed.model_parallel import DistributedModelParallel

        self.config = config
        self.model = model
        self.device = device
        tc = config.train_config
        wrapper = TrainWrapper(model)
        if train:
            build.check_optimizers(tc)
            build.apply_sparse_optimizer(tc, wrapper)
        self.dmp = DistributedModelParallel(
            wrapper, device=device, plan=sharding_plan(wrapper, device)
        )
        self.label_domains = guards.label_domains(model)
        #: metrics on training batches: the model's ``update_train_metric`` /
        #: ``compute_train_metric`` (``model_config.train_metrics``), when it has them
        self.has_train_metrics = bool(config.model_config.train_metrics) and all(
            callable(getattr(model, m, None))
            for m in ("update_train_metric", "compute_train_metric")
        )
        #: ``train_config.mixed_precision``: the autocast dtype, or None for full precision
        self.autocast_dtype = autocast_dtype(tc)
        #: ``train_config.grad_scaler``: loss scaling (dense and fused embedding gradients)
        self.scaler = grad_scaler(tc, device) if train else None
        #: ``train_config.gradient_accumulation_steps`` (0 and 1: step every batch)
        self.accumulation_steps = max(int(tc.gradient_accumulation_steps), 1)
        self._micro_steps = 0
        #: False when the last :meth:`train_step` had a non-finite loss and changed nothing
        self.last_step_applied = True
        self.optimizer: Any = None
        self.schedulers: list[Any] = []
        self.clip_config: Any = None
        if train:
            self.optimizer, self.schedulers = build.build_optimizer(tc, self.dmp)
            if tc.HasField("grad_clipping") and gradient_clipping_kwargs(tc.grad_clipping):
                self.clip_config = tc.grad_clipping

    def learning_rates(self) -> dict[str, float]:
        """Current dense learning rate(s)."""
        if not self.schedulers:
            return {}
        return {f"g{i}": lr for i, lr in enumerate(self.schedulers[0].get_last_lr())}

    def train_step(self, batch: Any) -> dict[str, float]:
        """Forward, backward, clip and step; returns the batch's losses as floats.

        A non-finite loss (on any rank) is not backpropagated: nothing changes, and
        :attr:`last_step_applied` is False. With ``gradient_accumulation_steps`` N > 1 the
        loss is divided by N and the dense optimizer steps (and gradients are clipped and
        zeroed) every N-th batch; the fused embedding optimizers apply each batch's 1/N share
        in backward (as upstream).
        """
        self.dmp.train()
        batch = batch.to(self.device)
        n = self.accumulation_steps
        if self._micro_steps % n == 0:
            self.optimizer.zero_grad()
        scale = float(self.scaler.get_scale()) if self.scaler is not None else None
        with self._autocast(), amp.sparse_gradient_scale(scale):
            loss, (losses, predictions, batch) = self.dmp(batch)
        self.last_step_applied = _all_ranks_true(bool(torch.isfinite(loss.detach())), loss)
        if not self.last_step_applied:
            return {k: float(v) for k, v in losses.items()}
        loss = loss / n if n > 1 else loss
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self._micro_steps += 1
        if self._micro_steps % n == 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.clip_config is not None:
                params = [p for p in self.dmp.parameters() if p.grad is not None]
                clip_gradients(params, self.clip_config)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)  # skipped when a gradient overflowed
                self.scaler.update()
            else:
                self.optimizer.step()
        for sched in self.schedulers:
            if not getattr(sched, "by_epoch", False):
                sched.step()
        if self.has_train_metrics:
            with torch.no_grad():
                self.model.update_train_metric(_float(predictions), batch)
        return {k: float(v) for k, v in losses.items()}

    def train_metrics(self) -> dict[str, float]:
        """The model's metrics over recent training batches (empty without train_metrics)."""
        if not self.has_train_metrics:
            return {}
        return {k: float(v) for k, v in self.model.compute_train_metric().items()}

    def evaluate(
        self,
        dataloader: Any,
        max_steps: int = 0,
        desc: str = "Evaluating",
        where: str = "evaluation input",
    ) -> dict[str, float]:
        """Metrics over ``dataloader`` (synchronised across ranks by the metrics).

        Labels outside what the losses accept (or NaN/inf) are a one-line ``DataError``
        naming ``where`` and the column.
        """
        self.dmp.eval()
        self.model.reset_metric()
        progress = ProgressReporter(desc, total=expected_batches(dataloader, max_steps))
        steps = 0
        with torch.no_grad():
            for batch in lockstep(dataloader, "evaluation"):
                guards.check_labels(batch, self.label_domains, where)
                with self._autocast():
                    _, (losses, predictions, batch) = self.dmp(batch.to(self.device))
                predictions = _float(predictions)
                self.model.update_metric(predictions, batch)
                steps += 1
                progress.update(steps, losses)
                if max_steps and steps >= max_steps:
                    break
        progress.close()
        return self.model.compute_metric()

    def _autocast(self) -> Any:
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    # -- schedules -----------------------------------------------------------------------

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

    # -- checkpoints ---------------------------------------------------------------------

    def save(self, store: ckpt.CheckpointStore, state: TrainState) -> Path:
        """Write ``model.ckpt-<step>`` with tensors, train position and RNG states (all ranks)."""
        return store.save(
            state.global_step,
            self.dmp,
            self.optimizer,
            extra={
                **state.__dict__,
                **({"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            },
            rng=capture_rng(),
        )

    def restore(self, path: Path, with_optimizer: bool = True, check: bool = True) -> TrainState:
        """Load tensors (and optimizer state) and return the train position of a checkpoint."""
        ckpt.load(path, self.dmp, self.optimizer if with_optimizer else None, check=check)
        extra = ckpt.read_extra(path)
        known = {k: int(v) for k, v in extra.items() if k in TrainState.__dataclass_fields__}
        if self.scaler is not None and with_optimizer and "grad_scaler" in extra:
            self.scaler.load_state_dict(extra["grad_scaler"])
        state = TrainState(**known)
        self.set_schedule_step(state.global_step, state.epoch)
        self._micro_steps = state.global_step  # accumulation windows stay aligned
        logger.info("restored %s", path)
        return state

    def fine_tune_from(
        self, path: Path, param_map: dict[str, str] | None = None
    ) -> ckpt.LoadReport:
        """Initialise the weights another checkpoint has (same or mapped name, same shape).

        What was ``missing`` from the checkpoint or had a ``mismatched`` shape keeps its
        fresh initialisation; both are logged and returned.
        """
        report = ckpt.load_partial(path, self.dmp, param_map)
        logger.info(
            "fine-tuning from %s: %d tensors loaded (%d under a mapped name), %d missing "
            "there, %d with another shape",
            path,
            len(report.loaded),
            len(report.remapped),
            len(report.missing),
            len(report.mismatched),
        )
        for name, src in report.remapped.items():
            logger.info("  %s <- %s", name, src)
        for kind, names in (("missing", report.missing), ("mismatched", report.mismatched)):
            if names:
                logger.info("  %s: %s", kind, ", ".join(names))
        return report


__all__ = ["Engine", "TrainState", "TrainWrapper", "lockstep", "sharding_plan"]
