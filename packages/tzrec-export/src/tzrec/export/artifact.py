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


def _describe(path: Path) -> str:
    subdirs = sorted(p.name for p in path.iterdir() if (p / META_FILE).is_file())
    if subdirs:
        return f"; it holds towers {', '.join(subdirs)} (point at one of them)"
    return ""


def load_exported(path: str | Path) -> ExportedModel:
    """Load ``scripted_model.pt`` or the AOT pair from an export (tower) directory.

    Raises:
        ConfigError: not an export directory (names the towers inside a match export).
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: exported model directory does not exist")
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise ConfigError(f"{path}: not an exported model (no {META_FILE}){_describe(path)}")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") == "aot":
        import tzrec.kernels  # noqa: F401  (registers the tzrec:: ops AOT programs call)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            sparse = torch.jit.load(str(path / SCRIPTED_SPARSE), map_location="cpu")
        dense = torch.export.load(str(path / AOT_DENSE)).module()

        def fn(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return dense(sparse(inputs))

        return ExportedModel(path, meta, fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(path / SCRIPTED), map_location="cpu")
    return ExportedModel(path, meta, scripted)
