"""Loading an exported model directory (see :mod:`tzrec.export.exporter` for the layout)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from tzrec.core.errors import ConfigError

SCRIPTED = "scripted_model.pt"
SCRIPTED_SPARSE = "scripted_sparse_model.pt"
AOT_DENSE = "aot_dense_model.pt2"
META_FILE = "model_meta.json"


class ExportedModel:
    """A loaded artefact: ``model(feature_tensors) -> outputs`` plus its metadata.

    Attributes:
        path: the artefact directory.
        meta: ``model_meta.json`` (format, inputs, outputs, features, tower, checkpoint).
    """

    def __init__(self, path: Path, meta: dict[str, Any], fn: Any, config: Any = None) -> None:
        self.path = path
        self.meta = meta
        self._fn = fn
        self._config = config

    @property
    def config(self) -> Any:
        """The pipeline config that reads this model's input (``pipeline.config``)."""
        if self._config is None:
            from tzrec.core.config import load_pipeline_config

            self._config = load_pipeline_config(self.path / "pipeline.config")
        return self._config

    @property
    def outputs(self) -> list[str]:
        """Output names."""
        return list(self.meta.get("outputs", []))

    @property
    def inputs(self) -> list[str]:
        """Feature tensor names the model reads."""
        return list(self.meta.get("inputs", []))

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run on one batch of feature tensors."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise ConfigError(
                f"{self.path}: inputs lack {', '.join(missing[:5])} (the model reads "
                f"{', '.join(self.inputs)})"
            )
        with torch.no_grad():
            return self._fn({n: inputs[n] for n in self.inputs})


#: a match export's tower sub-directories: upstream's names first, then tzrec's former ones
TOWER_DIRS = {"user_tower": ("user", "user_tower"), "item_tower": ("item", "item_tower")}


def tower_dir(export_dir: str | Path, tower: str) -> Path:
    """The directory of ``tower`` (``user_tower``/``item_tower``) inside a match export.

    Raises:
        ConfigError: neither ``user/`` nor the former ``user_tower/`` (resp. item) is there.
    """
    root = Path(export_dir)
    names = TOWER_DIRS.get(tower, (tower,))
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise ConfigError(
        f"{root}: no {names[0]}/ tower directory (export a match model first){_describe(root)}"
    )


def _describe(path: Path) -> str:
    if not path.is_dir():
        return ""
    subdirs = sorted(p.name for p in path.iterdir() if (p / META_FILE).is_file())
    if subdirs:
        return f"; it holds towers {', '.join(subdirs)} (point at one of them)"
    return ""


def _load_file(path: Path, loader: Any) -> Any:
    """``loader(path)``, with a missing or unreadable file reported in one line naming it.

    Raises:
        ConfigError: the file is missing, truncated or not what its name says.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the exported model directory; re-export it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            return loader(str(path))
    except Exception as e:  # torch raises RuntimeError/ValueError/zipfile errors alike
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        reason = lines[0][:200] if lines else type(e).__name__
        raise ConfigError(
            f"{path}: cannot be loaded, the file is corrupt or truncated ({reason}); "
            "re-export the model"
        ) from None


def _read_meta(meta_file: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{meta_file}: not valid JSON ({e}); re-export the model") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_file}: expected a JSON object; re-export the model")
    return meta


def load_exported(path: str | Path) -> ExportedModel:
    """Load ``scripted_model.pt`` or the AOT pair from an export (tower) directory.

    Raises:
        ConfigError: not an export directory (names the towers inside a match export), or
            a missing/corrupt artefact file (named).
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: exported model directory does not exist")
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise ConfigError(f"{path}: not an exported model (no {META_FILE}){_describe(path)}")
    meta = _read_meta(meta_file)
    if meta.get("format") == "aot":
        import tzrec.kernels  # noqa: F401  (registers the tzrec:: ops AOT programs call)

        sparse = _load_file(path / SCRIPTED_SPARSE, lambda p: torch.jit.load(p, map_location="cpu"))
        dense = _load_file(path / AOT_DENSE, lambda p: torch.export.load(p).module())

        def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return dense(sparse(inputs))

        return ExportedModel(path, meta, fn)
    scripted = _load_file(path / SCRIPTED, lambda p: torch.jit.load(p, map_location="cpu"))
    return ExportedModel(path, meta, scripted)
