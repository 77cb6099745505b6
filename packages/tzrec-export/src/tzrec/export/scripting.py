"""TorchScript/AOT compilation of an :class:`~tzrec.export.wrappers.ExportModule`.

TorchScript (default): the sparse part is compiled with ``torch.jit.script`` (its padding
depends on the data), the dense part is traced with ``torch.jit.trace`` (model code is
written trace-safe: no Python branching on tensor values in the serving view), and both are
joined in one scripted module, ``scripted_model.pt``.

AOT: the sparse part as above (``scripted_sparse_model.pt``); the dense part through
``torch.export`` with dynamic shapes from :mod:`tzrec.export.dims`, saved as
``aot_dense_model.pt2`` (``torch.export.save``).
"""

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from tzrec.export.atomic import write_file
from tzrec.export.dims import dynamic_shapes


class ScriptedPipeline(nn.Module):
    """``dense(sparse(inputs))`` over compiled parts (scripted as a whole)."""

    def __init__(self, sparse: nn.Module, dense: nn.Module) -> None:
        super().__init__()
        self.sparse = sparse
        self.dense = dense

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Outputs for one batch of feature tensors."""
        return self.dense(self.sparse(inputs))


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence TorchScript's deprecation and tracer notices (one per call otherwise).

    torch 2.14 marks ``torch.jit`` deprecated in favour of ``torch.export``; the TorchScript
    artefact stays the default for compatibility with TorchScript serving, ``--aot`` is the
    torch.export route.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="The TorchScript type system")
        yield


def script_sparse(module: Any) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of the serving lookups."""
    with quiet_jit():
        return torch.jit.script(module.sparse)


def trace_dense(module: Any, grouped: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of the dense part on one batch of grouped embeddings."""
    with quiet_jit():
        return torch.jit.trace(module.dense, (grouped,), strict=False, check_trace=False)


def to_torchscript(module: Any, grouped: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """One scripted module: scripted lookups feeding the traced dense part."""
    sparse, dense = script_sparse(module), trace_dense(module, grouped)
    with quiet_jit():
        return torch.jit.script(ScriptedPipeline(sparse, dense))


def save_torchscript(module: torch.jit.ScriptModule, path: Any) -> None:
    """``torch.jit.save`` without the deprecation notice, written durably.

    Serialised in memory first: torch's own file writer aborts the process (``c10::Error``
    thrown from a destructor) when the disk fills; here a full disk is an ``OSError``.
    """
    buffer = io.BytesIO()
    with quiet_jit():
        torch.jit.save(module, buffer)
    write_file(Path(path), buffer.getvalue())


def save_exported_program(program: torch.export.ExportedProgram, path: Any) -> None:
    """``torch.export.save`` through memory, written durably (as :func:`save_torchscript`)."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    write_file(Path(path), buffer.getvalue())


def export_dense(module: Any, grouped: dict[str, torch.Tensor]) -> torch.export.ExportedProgram:
    """``torch.export`` of the dense part, sequence groups sharing Dims (see dims)."""
    shapes = dynamic_shapes(grouped, module.features, module.feature_groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(
            module.dense, (dict(grouped),), dynamic_shapes=(shapes,), strict=False
        )
