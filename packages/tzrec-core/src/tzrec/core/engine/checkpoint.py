"""The checkpoint store: the one place that writes, verifies, finds and loads checkpoints.

Train, eval, export and predict all go through it. A checkpoint is a directory
``<model_dir>/model.ckpt-<step>/`` holding::

    state/            model (and optimizer) tensors, torch.distributed.checkpoint format
    extra.json        train position: global_step, epoch, batches_in_epoch
    rng/rank-<r>.json python, numpy and torch generator states of rank r
    done              the manifest: step, world size, every file's size and sha256

Writing is atomic: every rank writes into ``.tmp-model.ckpt-<step>-<pid>-<random>`` (a
name no other run uses), the files are fsync'ed, rank 0 writes the manifest last, fsyncs
it and renames the directory into place (an older checkpoint of the same step is moved
aside first and removed after). A run killed mid-save leaves only a ``.tmp-*`` directory,
which listings never return and the next run in that model_dir removes.

Loading verifies the manifest first, so a truncated or damaged checkpoint is reported as
corrupt (never as "a different config"); ``--continue_train`` then falls back to the
newest checkpoint that verifies. Disk-full and other I/O errors while saving are one line
with errno and path, and the temporary directory is removed.
"""

from __future__ import annotations

import errno as errno_mod
import hashlib
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

from torch import nn

from tzrec.core.engine import distributed as dist_util
from tzrec.core.engine.summary import TRAIN_EVAL_RESULT_FILENAME
from tzrec.core.errors import ConfigError, TzrecError

logger = logging.getLogger(__name__)

CKPT_PREFIX = "model.ckpt-"
TMP_PREFIX = ".tmp-"
MANIFEST_FILE = "done"
STATE_DIR = "state"
EXTRA_FILE = "extra.json"
RNG_DIR = "rng"
FORMAT_VERSION = 2
_CKPT_RE = re.compile(rf"^{re.escape(CKPT_PREFIX)}(\d+)$")


class CheckpointError(TzrecError):
    """A checkpoint cannot be written (disk full, I/O error) or read (missing, corrupt)."""


@dataclass
class LoadReport:
    """How a checkpoint matched a model: tensors loaded, missing there, of another shape."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    remapped: dict[str, str] = field(default_factory=dict)


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The step in a ``model.ckpt-<step>`` path, or -1 if the name has none."""
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else -1


def os_error_line(error: BaseException, path: str | os.PathLike[str]) -> str:
    """``[Errno N] <strerror>: <path>`` for the first OSError inside ``error`` (dcp wraps)."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            where = e.filename or path
            name = errno_mod.errorcode.get(e.errno, str(e.errno))
            return f"[Errno {e.errno} {name}] {e.strerror}: {where}"
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            stack.extend(exc for exc, _ in failures.values())
        for nested in (e.__cause__, e.__context__):
            if nested is not None:
                stack.append(nested)
    text = " ".join(str(error).split())
    if "Traceback" in text:  # a CheckpointException: keep its last line only
        text = str(error).strip().splitlines()[-1]
    return f"{type(error).__name__}: {text[:300]}: {path}"


# -- files -------------------------------------------------------------------------------


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


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe_files(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST_FILE:
            files[p.relative_to(root).as_posix()] = {
                "size": p.stat().st_size,
                "sha256": _sha256(p),
            }
    return files


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a checkpoint (raises :class:`CheckpointError` if unreadable)."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: not a complete checkpoint (no {MANIFEST_FILE} manifest)"
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint (unreadable manifest: {e})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (manifest is not an object)")
    return manifest


def verify(path: str | os.PathLike[str], checksums: bool = True) -> dict[str, Any]:
    """Check a checkpoint against its manifest; return the manifest.

    Every listed file must exist with its recorded size (and sha256 with ``checksums``).
    Checkpoints of the first format (a manifest listing names only) are checked for the
    presence of those entries.

    Raises:
        CheckpointError: no manifest, or a file missing, truncated or changed ("corrupt").
    """
    p = Path(path)
    manifest = read_manifest(p)
    files = manifest.get("files")
    if isinstance(files, list):  # format 1: names only
        absent = [name for name in files if not (p / name).exists()]
        if absent or not (p / STATE_DIR / ".metadata").is_file():
            missing = ", ".join(absent) or f"{STATE_DIR}/.metadata"
            raise CheckpointError(f"{p}: corrupt checkpoint ({missing} missing)")
        return manifest
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{p}: corrupt checkpoint (manifest lists no files)")
    for name, info in files.items():
        f = p / name
        if not f.is_file():
            raise CheckpointError(f"{p}: corrupt checkpoint ({name} missing)")
        size = f.stat().st_size
        if size != info.get("size"):
            raise CheckpointError(
                f"{p}: corrupt checkpoint ({name} has {size} bytes, the manifest says "
                f"{info.get('size')}: truncated or overwritten)"
            )
        if checksums and _sha256(f) != info.get("sha256"):
            raise CheckpointError(f"{p}: corrupt checkpoint ({name} fails its sha256 check)")
    return manifest


def read_extra(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The train position stored with a checkpoint (empty when it has none)."""
    f = Path(path) / EXTRA_FILE
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{f}: corrupt checkpoint ({e})") from None


def read_rng(path: str | os.PathLike[str], rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s generator states stored with a checkpoint (None if it has none)."""
    f = Path(path) / RNG_DIR / f"rank-{rank}.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text(encoding="utf-8"))


def read_param_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``fine_tune_ckpt_param_map`` file.

    One ``<name in this model> <name in the checkpoint>`` pair per line (whitespace
    separated, as upstream); blank lines and ``#`` comments are skipped.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"train_config.fine_tune_ckpt_param_map: {path}: {e.strerror}") from None
    mapping: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(
                f"{path}:{lineno}: expected '<model param> <checkpoint param>', got {line!r}"
            )
        mapping[parts[0]] = parts[1]
    return mapping


# -- loading -----------------------------------------------------------------------------


def _storage_error(path: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: checkpoint does not match this model ({type(e).__name__}: "
        f"{' '.join(str(e).split())[:300]}); was it trained with a different config?"
    )


def load(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: Any | None = None,
    *,
    check: bool = True,
) -> None:
    """Load a checkpoint's model (and optimizer) tensors into ``model`` (and ``optimizer``).

    ``model`` is the module whose ``state_dict`` was saved (the sharded training module, or
    an unsharded one with the same names: the checkpoint loads in any number of processes).

    Raises:
        CheckpointError: the checkpoint is corrupt (with ``check``), or its tensors do not
            fit this model.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    p = Path(path)
    if check:
        verify(p)
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        if hasattr(optimizer, "init_state"):
            optimizer.init_state()
        state["optimizer"] = optimizer.state_dict()
    try:
        dcp.load(state, checkpoint_id=str(p / STATE_DIR), no_dist=not dist.is_initialized())
    except (Exception, CheckpointException) as e:  # the latter is a BaseException
        raise _storage_error(p, e) from None
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])


def load_partial(
    path: str | os.PathLike[str],
    model: nn.Module,
    param_map: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> LoadReport:
    """Initialise the tensors of ``model`` that the checkpoint has (fine-tuning).

    A tensor is loaded from the checkpoint entry of the same name, or of the name
    ``param_map`` gives it (``train_config.fine_tune_ckpt_param_map``), when the shapes
    agree; the others keep their values and are reported as ``missing`` or ``mismatched``.

    Raises:
        ConfigError: ``param_map`` names a tensor this model lacks.
        CheckpointError: the checkpoint is corrupt, or shares no tensor with the model.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint.api import CheckpointException

    p = Path(path)
    if check:
        verify(p)
    param_map = dict(param_map or {})
    own = model.state_dict()
    unknown = sorted(set(param_map) - set(own))
    if unknown:
        raise ConfigError(
            f"train_config.fine_tune_ckpt_param_map: {', '.join(unknown[:5])} "
            f"{'is' if len(unknown) == 1 else 'are'} not in this model (e.g. {next(iter(own))})"
        )
    storage = str(p / STATE_DIR)
    try:
        meta = dcp.FileSystemReader(storage).read_metadata().state_dict_metadata
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable tzrec checkpoint ({e})") from None
    report = LoadReport()
    # one round per use of a checkpoint entry: two tensors mapped to one entry both load it
    rounds: list[dict[str, Any]] = []
    for name, value in own.items():
        src = param_map.get(name, name)
        saved = meta.get(f"model.{src}")
        if saved is None:
            report.missing.append(name)
            continue
        size = getattr(saved, "size", None)
        if size is not None and hasattr(value, "size") and tuple(size) != tuple(value.size()):
            report.mismatched.append(name)
            continue
        if src != name:
            report.remapped[name] = src
        free = next((r for r in rounds if src not in r), None)
        if free is None:
            free = {}
            rounds.append(free)
        free[src] = (name, value)
        report.loaded.append(name)
    if not rounds:
        raise CheckpointError(f"{p}: shares no weights with this model; nothing to fine-tune")
    loaded: dict[str, Any] = {}
    for by_source in rounds:
        try:
            dcp.load(
                {"model": {src: value for src, (_, value) in by_source.items()}},
                checkpoint_id=storage,
                planner=DefaultLoadPlanner(allow_partial_load=True),
                no_dist=not dist.is_initialized(),
            )
        except (Exception, CheckpointException) as e:
            raise _storage_error(p, e) from None
        # dcp loads in place; keep them under the names the model knows them by
        loaded.update({name: value for name, value in by_source.values()})
    model.load_state_dict(loaded, strict=False)
    return report


# -- the store ---------------------------------------------------------------------------


class CheckpointStore:
    """Checkpoints of one ``model_dir``: list, select, save, prune.

    Args:
        model_dir: directory holding ``model.ckpt-<step>`` checkpoints.
        keep_checkpoint_max: keep at most this many newest checkpoints (0 keeps all).
    """

    def __init__(self, model_dir: str | os.PathLike[str], keep_checkpoint_max: int = 0) -> None:
        self.model_dir = Path(model_dir)
        self.keep_checkpoint_max = max(int(keep_checkpoint_max), 0)

    # -- listing -----------------------------------------------------------------------

    def path_for(self, step: int) -> Path:
        """Where the checkpoint of ``step`` lives."""
        return self.model_dir / f"{CKPT_PREFIX}{step}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (with a manifest) as ``(step, path)``, oldest first."""
        if not self.model_dir.is_dir():
            return []
        found = []
        for child in self.model_dir.iterdir():
            step = checkpoint_step(child)
            if step < 0 or not child.is_dir():
                continue
            if not (child / MANIFEST_FILE).is_file():
                logger.warning(
                    "ignoring incomplete checkpoint %s (no %s manifest)", child, MANIFEST_FILE
                )
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

    def latest_intact(self) -> tuple[Path | None, int]:
        """The newest checkpoint that verifies; corrupt newer ones are skipped with a warning."""
        for step, path in reversed(self.checkpoints()):
            try:
                verify(path)
            except CheckpointError as e:
                logger.warning("%s; falling back to the previous checkpoint", e)
                continue
            return path, step
        return None, -1

    def best(
        self, metric: str, larger_is_better: bool = True, results_file: str | None = None
    ) -> Path | None:
        """The checkpoint whose evaluation is best on ``metric`` (None if none is scored).

        Scores come from ``train_eval_result.txt`` (one JSON line per evaluation with its
        ``global_step``); steps whose checkpoint is gone (pruned) are skipped.
        """
        results = self.model_dir / (results_file or TRAIN_EVAL_RESULT_FILENAME)
        if not results.is_file():
            return None
        available = dict(self.checkpoints())
        scored = []
        for line in results.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = row.get("global_step")
            if metric in row and step in available:
                value = float(row[metric])
                scored.append((value if larger_is_better else -value, step))
        return available[max(scored)[1]] if scored else None

    def evaluated_steps(self, results_file: str | None = None) -> set[int]:
        """Global steps that have a line in ``train_eval_result.txt``."""
        results = self.model_dir / (results_file or TRAIN_EVAL_RESULT_FILENAME)
        steps: set[int] = set()
        if results.is_file():
            for line in results.read_text(encoding="utf-8").splitlines():
                try:
                    steps.add(int(json.loads(line)["global_step"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return steps

    def resolve(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """The checkpoint ``path`` names: itself, or the latest one in it (a model_dir).

        With ``path`` None: the latest in this store's ``model_dir`` (None if there is none).

        Raises:
            CheckpointError: ``path`` is neither a complete checkpoint nor holds one.
        """
        if path is None:
            return self.latest()[0]
        p = Path(path)
        if checkpoint_step(p) >= 0:
            read_manifest(p)
            return p
        latest, _ = CheckpointStore(p).latest()
        if latest is None:
            raise CheckpointError(f"{p}: no complete model.ckpt-<step> checkpoint found")
        return latest

    def require(self, path: str | os.PathLike[str] | None, purpose: str) -> Path:
        """Like :meth:`resolve`, but no checkpoint at all is a one-line error too.

        ``purpose`` completes "no checkpoint to ...; train first" (``evaluate``, ``export``).
        """
        found = self.resolve(path)
        if found is None:
            raise CheckpointError(f"{self.model_dir}: no checkpoint to {purpose}; train first")
        return found

    def select(
        self,
        path: str | os.PathLike[str] | None,
        purpose: str,
        exporter_type: str = "latest",
        metric: str = "auc",
        larger_is_better: bool = True,
    ) -> Path:
        """``path``, else the best (``exporter_type: best``) or latest checkpoint."""
        found = self.require(path, purpose)
        if path is None and exporter_type == "best":
            best = self.best(metric, larger_is_better)
            if best is not None:
                return best
            logger.warning("exporter_type best: no evaluated checkpoint found, using latest")
        return found

    # -- writing -----------------------------------------------------------------------

    def remove_stale_tmp(self) -> list[Path]:
        """Delete temporary directories and files left in model_dir by interrupted saves.

        Call it only while holding the model_dir lock (no other run writes there then).
        """
        removed = []
        if not self.model_dir.is_dir():
            return removed
        for child in self.model_dir.glob(f"{TMP_PREFIX}*"):
            logger.warning("removing leftover of an interrupted save: %s", child)
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
        return removed

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep_checkpoint_max`` checkpoints; return the deleted."""
        if self.keep_checkpoint_max <= 0:
            return []
        ckpts = self.checkpoints()
        doomed = [path for _, path in ckpts[: max(len(ckpts) - self.keep_checkpoint_max, 0)]]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed old checkpoint %s", path)
        return doomed

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: Any | None = None,
        extra: Mapping[str, Any] | None = None,
        rng: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``model.ckpt-<step>`` atomically; every rank calls it (a collective).

        Args:
            step: the global step.
            model: the module whose ``state_dict`` is saved.
            optimizer: its optimizer (state saved too), if any.
            extra: JSON-able train position (global_step, epoch, batches_in_epoch).
            rng: this rank's generator states (:func:`tzrec.core.engine.distributed.capture_rng`).

        Raises:
            CheckpointError: a write failed (disk full, I/O error): one line with errno and
                path; nothing of this save is left behind.
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        final = self.path_for(step)
        rank = dist_util.rank()
        is_zero = rank == 0
        name = f"{TMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = self.model_dir / dist_util.broadcast_from_zero(name)
        failure: str | None = None
        try:
            if is_zero:
                self.model_dir.mkdir(parents=True, exist_ok=True)
                tmp.mkdir()
            dist_util.barrier()
            state: dict[str, Any] = {"model": model.state_dict()}
            if optimizer is not None:
                state["optimizer"] = optimizer.state_dict()
            dcp.save(state, checkpoint_id=str(tmp / STATE_DIR))
            if rng is not None:
                (tmp / RNG_DIR).mkdir(exist_ok=True)
                write_json_atomic(tmp / RNG_DIR / f"rank-{rank}.json", dict(rng))
        except (OSError, CheckpointException) as e:  # the latter is a BaseException
            failure = os_error_line(e, tmp)
        except BaseException:
            if is_zero:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        # every rank's files are written (or failed) before rank 0 lists them
        failure = dist_util.first_of_ranks(failure)
        if is_zero and failure is None:
            try:
                self._finish(tmp, final, step, dict(extra or {}))
            except OSError as e:
                failure = os_error_line(e, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        failure = dist_util.broadcast_from_zero(failure)
        if failure is not None:
            if is_zero:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"could not write checkpoint {final}: {failure}")
        if is_zero:
            self.prune()
            logger.info("saved checkpoint %s", final)
        return final

    def _finish(self, tmp: Path, final: Path, step: int, extra: dict[str, Any]) -> None:
        """Rank 0: train position, manifest (last, fsync'ed), then rename into place."""
        write_json_atomic(tmp / EXTRA_FILE, extra)
        for d in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
            _fsync_dir(d)
        manifest = {
            "format": FORMAT_VERSION,
            "step": step,
            "world_size": dist_util.world_size(),
            "files": _describe_files(tmp),
        }
        write_json_atomic(tmp / MANIFEST_FILE, manifest)
        _fsync_dir(tmp)
        if final.exists():
            # replace a checkpoint of the same step: move it aside first so a checkpoint of
            # this step exists at every moment but one rename
            old = self.model_dir / f"{TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.model_dir)


__all__ = [
    "CKPT_PREFIX",
    "EXTRA_FILE",
    "MANIFEST_FILE",
    "RNG_DIR",
    "STATE_DIR",
    "TMP_PREFIX",
    "CheckpointError",
    "CheckpointStore",
    "LoadReport",
    "checkpoint_step",
    "load",
    "load_partial",
    "os_error_line",
    "read_extra",
    "read_manifest",
    "read_param_map",
    "read_rng",
    "verify",
    "write_json_atomic",
]
