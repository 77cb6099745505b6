"""The train and evaluate loops behind ``tzrec train`` / ``tzrec eval``.

A training run holds ``model_dir``'s lock for its whole length (a second run into the
same directory is refused in one line naming the holder's pid), removes leftovers of
interrupted saves when it starts, checkpoints model, optimizer, train position and every
rank's generator states, and evaluates after each checkpoint. Resuming restores all of it
at the point the interrupted run saved, so a resumed run computes the same losses as an
uninterrupted one; a checkpoint whose evaluation was cut off by the interruption is
evaluated first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist

from tzrec.core import build
from tzrec.core.config import save_message
from tzrec.core.engine import checkpoint as ckpt
from tzrec.core.engine import distributed as dist_util
from tzrec.core.engine import guards
from tzrec.core.engine.engine import Engine, TrainState, lockstep
from tzrec.core.engine.lock import DirLock, LockedError
from tzrec.core.engine.ranks import is_rank_zero
from tzrec.core.engine.summary import (
    TRAIN_EVAL_RESULT_FILENAME,
    ProgressReporter,
    Summary,
    check_result_writable,
    write_eval_result,
)
from tzrec.core.errors import ConfigError
from tzrec.protos import pipeline_pb2

logger = logging.getLogger(__name__)

WARMUP_STEPS = 10
PIPELINE_CONFIG_FILENAME = "pipeline.config"


def setup_process(config: pipeline_pb2.EasyRecConfig) -> Any:
    """Process group, seeds and compute threads of a command; returns the device."""
    import os

    device = dist_util.init_distributed()
    dist_util.seed_everything(dist_util.configured_seed())
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        dist_util.fit_threads(int(config.data_config.num_workers), local)
    return device


def _batches(
    dataset: Any, epoch: int, skip: int, on_position: Callable[[], None] | None = None
) -> Iterator[Any]:
    """The epoch's batches after the first ``skip``; ``on_position`` runs once there.

    ``on_position`` runs when the reader stands where the interrupted run saved: before the
    data loader starts when nothing is skipped, else right after the last skipped batch.
    """
    if on_position is not None and skip == 0:
        on_position()
        on_position = None
    dataset.set_epoch(epoch)
    for i, batch in enumerate(lockstep(dataset.make_dataloader(), f"training epoch {epoch}")):
        if i < skip:
            if i == skip - 1 and on_position is not None:
                on_position()
                on_position = None
            continue
        yield batch


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}:{v:.6f}" for k, v in metrics.items())


def _acquire_lock(model_dir: Path) -> DirLock | None:
    """Rank 0 takes model_dir's lock; every rank raises if it is held elsewhere."""
    lock = DirLock(model_dir, "training") if is_rank_zero() else None
    refusal = None
    if lock is not None:
        try:
            lock.acquire()
        except LockedError as e:
            refusal = str(e)
    refusal = dist_util.broadcast_from_zero(refusal)
    if refusal is not None:
        if lock is not None and lock.held:
            lock.release()
        raise LockedError(refusal)
    return lock


def train_and_evaluate(
    config: pipeline_pb2.EasyRecConfig,
    continue_train: bool = False,
    fine_tune_checkpoint: str | None = None,
    ignore_restore_optimizer: bool = False,
) -> dict[str, Any]:
    """Train with evaluation at every checkpoint; return the final step and metrics."""
    device = setup_process(config)
    model_dir = Path(config.model_dir)
    lock = _acquire_lock(model_dir)
    try:
        return _train(
            config, device, continue_train, fine_tune_checkpoint, ignore_restore_optimizer
        )
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: pipeline_pb2.EasyRecConfig,
    device: Any,
    continue_train: bool,
    fine_tune_checkpoint: str | None,
    ignore_restore_optimizer: bool,
) -> dict[str, Any]:
    tc = config.train_config
    model_dir = Path(config.model_dir)
    policy = guards.non_finite_policy()
    store = ckpt.CheckpointStore(model_dir, tc.keep_checkpoint_max)
    if is_rank_zero():
        store.remove_stale_tmp()
    dist_util.barrier()
    latest, _ = store.latest()
    if latest is not None and not continue_train:
        raise ConfigError(
            f"{model_dir} already holds checkpoints ({latest.name}); pass --continue_train to "
            "resume, or choose another --model_dir"
        )
    resume_from = store.latest_intact()[0] if continue_train and latest is not None else None
    if continue_train and latest is not None and resume_from is None:
        raise ckpt.CheckpointError(
            f"{model_dir}: every checkpoint is corrupt; nothing to resume from"
        )
    fine_tune = (
        None if resume_from is not None else (fine_tune_checkpoint or tc.fine_tune_checkpoint)
    )
    param_map = None
    if tc.fine_tune_ckpt_param_map:
        if fine_tune:
            param_map = ckpt.read_param_map(tc.fine_tune_ckpt_param_map)
        elif resume_from is None:
            raise ConfigError(
                "train_config.fine_tune_ckpt_param_map is set but there is no "
                "fine_tune_checkpoint to map names from"
            )
    features = build.create_features(config)
    train_ds = build.build_dataset(config, features, config.train_input_path, "train")
    eval_ds = (
        build.build_dataset(config, features, config.eval_input_path, "eval")
        if config.eval_input_path
        else None
    )
    model = build.build_model(config, train_ds.features)
    engine = Engine(config, model, device, train=True)
    if is_rank_zero():
        model_dir.mkdir(parents=True, exist_ok=True)
        save_message(config, model_dir / PIPELINE_CONFIG_FILENAME)
    state = TrainState()
    pending_rng: dict[str, Any] | None = None
    if resume_from is not None:
        # verified by latest_intact just now
        state = engine.restore(
            resume_from, with_optimizer=not ignore_restore_optimizer, check=False
        )
        pending_rng = ckpt.read_rng(resume_from, dist_util.rank())
        if pending_rng is None:
            logger.warning(
                "%s holds no generator state for rank %d: the resumed run draws other random "
                "numbers than an uninterrupted one would",
                resume_from,
                dist_util.rank(),
            )
    elif fine_tune:
        try:
            ft_path = ckpt.CheckpointStore(fine_tune).require(fine_tune, "fine-tune from")
        except ckpt.CheckpointError as e:
            raise ConfigError(f"fine_tune_checkpoint: {e}") from None
        engine.fine_tune_from(ft_path, param_map)
    num_epochs = int(tc.num_epochs) if tc.HasField("num_epochs") else (0 if tc.num_steps else 1)
    num_steps = int(tc.num_steps)
    save_steps = int(tc.save_checkpoints_steps)
    save_epochs = int(tc.save_checkpoints_epochs)
    log_steps = max(int(tc.log_step_count_steps), 1)
    accumulate = engine.accumulation_steps
    if accumulate > 1 and (save_steps % accumulate or save_epochs):
        logger.warning(
            "train_config.gradient_accumulation_steps %d: a checkpoint saved inside an "
            "accumulation window drops that window's gradients; use save_checkpoints_steps "
            "that are multiples of it for exact resumes",
            accumulate,
        )
    summary = Summary(model_dir, enabled=is_rank_zero() and tc.use_tensorboard)
    result_file = model_dir / TRAIN_EVAL_RESULT_FILENAME
    eval_steps = int(config.eval_config.num_steps)
    last_metrics: dict[str, float] = {}
    last_saved = state.global_step if resume_from is not None else -1

    def run_eval() -> None:
        nonlocal last_metrics
        if eval_ds is None:
            return
        # evaluation must not move the training generators (resume equality)
        with dist_util.isolated_rng():
            last_metrics = engine.evaluate(
                eval_ds.make_dataloader(),
                eval_steps,
                f"Evaluating step {state.global_step}",
                where=config.eval_input_path,
            )
        summary.log_eval(state.global_step, last_metrics)
        write_eval_result(result_file, state.global_step, last_metrics)
        logger.info(
            "rank %d eval at step %d: %s",
            dist.get_rank(),
            state.global_step,
            _format_metrics(last_metrics),
        )

    def checkpoint_and_eval() -> None:
        nonlocal last_saved
        if last_saved == state.global_step:
            return
        engine.save(store, state)
        last_saved = state.global_step
        run_eval()

    if resume_from is not None and eval_ds is not None:
        evaluated = dist_util.broadcast_from_zero(
            state.global_step in store.evaluated_steps() if is_rank_zero() else None
        )
        if not evaluated:
            logger.info(
                "%s was saved but never evaluated (the run stopped first): evaluating it now",
                resume_from,
            )
            run_eval()

    def restore_position_rng() -> None:
        nonlocal pending_rng
        if pending_rng is not None:
            dist_util.restore_rng(pending_rng)
            pending_rng = None

    progress = ProgressReporter(
        "Training",
        total=num_steps or _epoch_steps(train_ds, num_epochs),
        start_step=state.global_step,
    )
    start = time.monotonic()
    start_step = state.global_step
    # steady-state throughput excludes the first steps (reader start-up, lazy init)
    warm_step, warm_time = start_step + WARMUP_STEPS, 0.0
    done = bool(num_steps) and state.global_step >= num_steps
    skipped = 0
    try:
        epoch = state.epoch
        while not done and (num_epochs == 0 or epoch < num_epochs):
            skip = state.batches_in_epoch if epoch == state.epoch else 0
            state.epoch, state.batches_in_epoch = epoch, skip
            seen = 0
            for batch in _batches(train_ds, epoch, skip, restore_position_rng):
                seen += 1
                guards.check_labels(
                    batch, engine.label_domains, config.train_input_path, allow_non_finite=True
                )
                losses = engine.train_step(batch)
                state.batches_in_epoch += 1
                if not engine.last_step_applied:
                    message = guards.non_finite_message(state.global_step + 1, losses, batch)
                    if policy == guards.STOP:
                        raise guards.NonFiniteLossError(message)
                    skipped += 1
                    if skipped <= 10 or skipped % 100 == 0:
                        logger.warning(
                            "skipped batch %d with a non-finite loss: %s", skipped, message
                        )
                    continue
                state.global_step += 1
                if state.global_step == warm_step:
                    warm_time = time.monotonic()
                progress.update(state.global_step, losses, engine.learning_rates())
                if state.global_step % log_steps == 0:
                    train_metrics = engine.train_metrics()
                    if train_metrics:
                        logger.info(
                            "train metrics at step %d: %s",
                            state.global_step,
                            _format_metrics(train_metrics),
                        )
                    summary.log_train(
                        state.global_step, losses, engine.learning_rates(), train_metrics
                    )
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
    if skipped:
        logger.warning(
            "%d batch(es) skipped for a non-finite loss (%s=%s)",
            skipped,
            guards.NON_FINITE_ENV,
            policy,
        )
    if steps == 0 and skipped:
        raise guards.NonFiniteLossError(
            f"{config.train_input_path}: every batch had a non-finite loss ({skipped} skipped); "
            "nothing was trained"
        )
    if steps == 0 and start_step == 0:
        raise ConfigError(
            f"{config.train_input_path}: training read no batches (empty input, or every row "
            "skipped)"
        )
    checkpoint_and_eval()
    summary.close()
    stats = getattr(train_ds, "summary", {})
    return {
        "global_step": state.global_step,
        "steps_per_second": steps / elapsed if elapsed > 0 else 0.0,
        "steady_steps_per_second": (
            (state.global_step - warm_step) / (loop_end - warm_time)
            if warm_time and state.global_step > warm_step
            else None
        ),
        "metrics": last_metrics,
        "model_dir": str(model_dir),
        "checkpoint": str(store.path_for(state.global_step)),
        "data": dict(stats) if isinstance(stats, dict) else {},
        "skipped_non_finite": skipped,
    }


def _epoch_steps(dataset: Any, num_epochs: int) -> int | None:
    """Steps of ``num_epochs`` passes (one per batch), for the progress bar's total.

    None for a step-bounded run or a dataset that cannot count its batches up front.
    """
    count = getattr(dataset, "num_batches", None)
    per_epoch = count() if num_epochs and callable(count) else None
    return num_epochs * per_epoch if per_epoch else None


def evaluate(
    config: pipeline_pb2.EasyRecConfig,
    checkpoint_path: str | None = None,
    eval_result_filename: str = "eval_result.txt",
) -> dict[str, Any]:
    """Evaluate a checkpoint (default: the latest in model_dir) on the eval input."""
    result_file = Path(config.model_dir) / eval_result_filename
    if is_rank_zero():
        check_result_writable(result_file)  # before the whole evaluation, not after it
    device = setup_process(config)
    path = ckpt.CheckpointStore(config.model_dir).require(checkpoint_path, "evaluate")
    features = build.create_features(config)
    eval_ds = build.build_dataset(config, features, config.eval_input_path, "eval")
    model = build.build_model(config, eval_ds.features)
    engine = Engine(config, model, device, train=False)
    state = engine.restore(path, with_optimizer=False)
    metrics = engine.evaluate(
        eval_ds.make_dataloader(), int(config.eval_config.num_steps), where=config.eval_input_path
    )
    logger.info("eval of %s (step %d): %s", path, state.global_step, _format_metrics(metrics))
    write_eval_result(result_file, state.global_step, metrics)
    return {"global_step": state.global_step, "metrics": metrics, "checkpoint": str(path)}


__all__ = ["PIPELINE_CONFIG_FILENAME", "evaluate", "setup_process", "train_and_evaluate"]
