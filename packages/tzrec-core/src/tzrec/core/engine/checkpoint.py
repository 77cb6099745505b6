"""Atomic checkpoints under ``<model_dir>/model.ckpt-<step>/``.

A checkpoint is written into a hidden temporary directory in ``model_dir``, every file
and the directory are fsync'ed, a ``done`` marker is written last, and only then is the
directory renamed to ``model.ckpt-<step>``. A run killed mid-save leaves at most a
``.tmp-model.ckpt-*`` directory, which :meth:`CheckpointManager.latest` never returns (and
the next save removes), so training resumes from the previous complete checkpoint.

Files inside a checkpoint: ``model.pt`` (model state), ``optimizer.pt`` (optional),
``extra.pt`` (data position, epoch, anything picklable by ``torch.save``) and ``done``
(JSON: step and file names). States are written with ``torch.save``; a subclass can
override :meth:`CheckpointManager.write_state` / :meth:`CheckpointManager.read_state` to
use ``torch.distributed.checkpoint`` for sharded models without changing callers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tzrec.core.engine.ranks import is_rank_zero

logger = logging.getLogger(__name__)

CKPT_PREFIX = "model.ckpt-"
TMP_PREFIX = ".tmp-"
DONE_FILE = "done"
MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
EXTRA_FILE = "extra.pt"
_CKPT_RE = re.compile(rf"^{re.escape(CKPT_PREFIX)}(\d+)$")


@dataclass
class Checkpoint:
    """What a checkpoint holds, as loaded by :meth:`CheckpointManager.load`."""

    path: Path
    step: int
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """How a state dict matched a model: names missing, unexpected, mismatched, remapped."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    remapped: dict[str, str] = field(default_factory=dict)

    @property
    def loaded_all(self) -> bool:
        """True when every model state was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.shape_mismatch)


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The step in a ``model.ckpt-<step>`` path, or -1 if the name has none."""
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else -1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointManager:
    """Save, find, restore and prune checkpoints in ``model_dir``.

    Args:
        model_dir: directory holding ``model.ckpt-<step>`` checkpoints.
        keep_checkpoint_max: keep at most this many newest checkpoints (0 keeps all).
        is_writer: whether this process writes files (default: rank 0 only).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        keep_checkpoint_max: int = 0,
        is_writer: bool | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.keep_checkpoint_max = max(int(keep_checkpoint_max), 0)
        self.is_writer = is_rank_zero() if is_writer is None else is_writer

    # -- storage (override to swap the format) ---------------------------------------

    def write_state(self, path: Path, state: Any) -> None:
        """Write one state object to ``path`` and fsync it."""
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    def read_state(self, path: Path) -> Any:
        """Read a state object written by :meth:`write_state`."""
        return torch.load(path, map_location="cpu", weights_only=False)

    # -- listing -----------------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as ``(step, path)``, oldest first.

        Directories without the ``done`` marker (copied partially, or written by a crashed
        run of an older version) and temporary directories are skipped.
        """
        if not self.model_dir.is_dir():
            return []
        found = []
        for child in self.model_dir.iterdir():
            step = checkpoint_step(child)
            if step < 0 or not child.is_dir():
                continue
            if not (child / DONE_FILE).is_file():
                logger.warning("ignoring incomplete checkpoint %s (no %s marker)", child, DONE_FILE)
                continue
            found.append((step, child))
        return sorted(found)

    def latest(self) -> tuple[Path | None, int]:
        """The newest complete checkpoint and its step, or ``(None, -1)``."""
        ckpts = self.checkpoints()
        if not ckpts:
            return None, -1
        step, path = ckpts[-1]
        return path, step

    def path_for(self, step: int) -> Path:
        """Where the checkpoint of ``step`` lives."""
        return self.model_dir / f"{CKPT_PREFIX}{step}"

    # -- saving ------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model_state: Mapping[str, Any],
        optimizer_state: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint for ``step`` atomically, then prune old ones.

        Args:
            step: the global step; the checkpoint is ``model.ckpt-<step>``.
            model_state: ``model.state_dict()``.
            optimizer_state: ``optimizer.state_dict()``, if any.
            extra: small picklable values such as the data position and the epoch.

        Returns:
            The checkpoint's path (also on non-writer ranks, which write nothing).
        """
        final = self.path_for(step)
        if not self.is_writer:
            return final
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale_tmp()
        tmp = self.model_dir / f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            files = [MODEL_FILE]
            self.write_state(tmp / MODEL_FILE, dict(model_state))
            if optimizer_state is not None:
                self.write_state(tmp / OPTIMIZER_FILE, dict(optimizer_state))
                files.append(OPTIMIZER_FILE)
            self.write_state(tmp / EXTRA_FILE, dict(extra or {}))
            files.append(EXTRA_FILE)
            with open(tmp / DONE_FILE, "w", encoding="utf-8") as f:
                json.dump({"step": step, "files": files}, f)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            if final.exists():
                # Replace an existing checkpoint of the same step: move it aside first so
                # a complete checkpoint of this step exists at every moment but one rename.
                old = self.model_dir / f"{TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("saved checkpoint %s", final)
        self.prune()
        return final

    def remove_stale_tmp(self) -> None:
        """Delete temporary directories left by interrupted saves."""
        for child in self.model_dir.glob(f"{TMP_PREFIX}*"):
            logger.warning("removing leftover of an interrupted save: %s", child)
            shutil.rmtree(child, ignore_errors=True)

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep_checkpoint_max`` checkpoints; return the deleted."""
        if not self.is_writer or self.keep_checkpoint_max <= 0:
            return []
        ckpts = self.checkpoints()
        doomed = [path for _, path in ckpts[: max(len(ckpts) - self.keep_checkpoint_max, 0)]]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed old checkpoint %s", path)
        return doomed

    # -- loading -----------------------------------------------------------------------

    def resolve(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """The checkpoint ``path`` names: itself, or the latest one in it (a model_dir).

        With ``path`` None: the latest in this manager's ``model_dir`` (None if there is none).
        """
        if path is None:
            return self.latest()[0]
        p = Path(path)
        if checkpoint_step(p) >= 0:
            if not (p / DONE_FILE).is_file():
                raise FileNotFoundError(f"{p}: not a complete checkpoint (no {DONE_FILE} marker)")
            return p
        latest, _ = CheckpointManager(p, is_writer=False).latest()
        if latest is None:
            raise FileNotFoundError(f"{p}: no complete model.ckpt-<step> checkpoint found")
        return latest

    def require(self, path: str | os.PathLike[str] | None, purpose: str) -> Path:
        """Like :meth:`resolve`, but a missing checkpoint is a one-line ``ConfigError``.

        ``purpose`` completes "no checkpoint to ...; train first" (``evaluate``, ``export``).
        """
        from tzrec.core.errors import ConfigError

        try:
            found = self.resolve(path)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        if found is None:
            raise ConfigError(f"{self.model_dir}: no checkpoint to {purpose}; train first")
        return found

    def load(self, path: str | os.PathLike[str] | None = None) -> Checkpoint | None:
        """Read a checkpoint (default: the latest); None when there is none."""
        p = self.resolve(path)
        if p is None:
            return None
        optimizer_state = None
        if (p / OPTIMIZER_FILE).is_file():
            optimizer_state = self.read_state(p / OPTIMIZER_FILE)
        extra = self.read_state(p / EXTRA_FILE) if (p / EXTRA_FILE).is_file() else {}
        return Checkpoint(
            path=p,
            step=checkpoint_step(p),
            model_state=self.read_state(p / MODEL_FILE),
            optimizer_state=optimizer_state,
            extra=extra,
        )

    def restore(
        self,
        model: nn.Module,
        optimizer: Any | None = None,
        path: str | os.PathLike[str] | None = None,
        strict: bool = True,
    ) -> Checkpoint | None:
        """Load a checkpoint (default: the latest) into ``model`` and ``optimizer``.

        Returns:
            The checkpoint (its ``step`` and ``extra`` tell where to resume), or None when
            ``model_dir`` holds no complete checkpoint.
        """
        ckpt = self.load(path)
        if ckpt is None:
            return None
        report = load_state_into(model, ckpt.model_state)
        _log_report(report, ckpt.path)
        if strict and not report.loaded_all:
            raise RuntimeError(
                f"{ckpt.path}: checkpoint does not match the model: missing {report.missing}, "
                f"unexpected {report.unexpected}, shape mismatch {report.shape_mismatch}"
            )
        if optimizer is not None and ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        logger.info("restored checkpoint %s (step %d)", ckpt.path, ckpt.step)
        return ckpt


def read_param_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``fine_tune_ckpt_param_map`` file: ``<model name> <checkpoint name>`` per line."""
    mapping: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            from tzrec.core.errors import ConfigError

            raise ConfigError(
                f"{path}:{lineno}: expected '<model param> <checkpoint param>', got {line!r}"
            )
        mapping[parts[0]] = parts[1]
    return mapping


def load_state_into(
    model: nn.Module,
    state: Mapping[str, Any],
    param_map: Mapping[str, str] | None = None,
) -> LoadReport:
    """Copy matching entries of ``state`` into ``model``; report what did not match.

    ``param_map`` maps model state names to the names they have in ``state`` (renamed
    parameters). Entries whose shapes differ are skipped, not loaded.
    """
    param_map = dict(param_map or {})
    own = model.state_dict()
    report = LoadReport()
    to_load: dict[str, Any] = {}
    used: set[str] = set()
    for name, tensor in own.items():
        src = param_map.get(name, name)
        if src not in state:
            report.missing.append(name)
            continue
        value = state[src]
        used.add(src)
        if src != name:
            report.remapped[name] = src
        if hasattr(value, "shape") and hasattr(tensor, "shape") and value.shape != tensor.shape:
            report.shape_mismatch.append(name)
            continue
        to_load[name] = value
    report.unexpected = sorted(set(state) - used)
    model.load_state_dict(to_load, strict=False)
    return report


def _log_report(report: LoadReport, source: Path | str) -> None:
    for name, src in report.remapped.items():
        logger.info("%s: loaded %s from %s", source, name, src)
    if report.missing:
        logger.warning("%s: not in checkpoint, left as initialised: %s", source, report.missing)
    if report.unexpected:
        logger.warning("%s: in checkpoint but not in the model: %s", source, report.unexpected)
    if report.shape_mismatch:
        logger.warning("%s: shape differs, not loaded: %s", source, report.shape_mismatch)


def fine_tune_from(
    model: nn.Module,
    checkpoint: str | os.PathLike[str],
    param_map: Mapping[str, str] | str | os.PathLike[str] | None = None,
) -> LoadReport:
    """Initialise ``model`` from another run's checkpoint (``train_config.fine_tune_checkpoint``).

    ``checkpoint`` is a ``model.ckpt-<step>`` directory or a model_dir (its latest is used);
    ``param_map`` is a mapping or a ``fine_tune_ckpt_param_map`` file. Partial matches are
    fine: what is missing, unexpected, renamed or mismatched is logged and returned.
    """
    manager = CheckpointManager(checkpoint, is_writer=False)
    path = manager.resolve(checkpoint)
    state = manager.read_state(path / MODEL_FILE)
    if param_map is not None and not isinstance(param_map, Mapping):
        param_map = read_param_map(param_map)
    report = load_state_into(model, state, param_map)
    _log_report(report, path)
    logger.info("fine-tuning from %s", path)
    return report
