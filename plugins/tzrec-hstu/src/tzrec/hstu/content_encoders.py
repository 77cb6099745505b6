"""Content encoders of ``contextual_preprocessor``: history and candidate items to one width.

Each encoder is built as ``cls(config, uih_dim, candidate_dim)``, has ``output_dim()`` and
maps ``(history (Nh, uih_dim), candidates (Nc, candidate_dim))`` to two tensors of width
``output_dim()``, which ``content_mlp`` then maps to the STU width. They are looked up by the
``GRContentEncoder`` oneof name in :data:`CONTENT_ENCODERS`:

* ``slice_content_encoder``: candidates keep their first ``uih_dim`` columns (the candidate
  group may carry extra item features after the ones it shares with the history);
* ``pad_content_encoder``: history items get a learned filler up to ``candidate_dim``;
* ``mlp_content_encoder``: one MLP per side (``uih_mlp``, ``target_mlp``), equal output widths.
"""

from __future__ import annotations

import torch
from torch import nn

from tzrec.core.config import which_oneof
from tzrec.core.errors import ConfigError
from tzrec.models.modules.mlp import MLP
from tzrec.protos import module_pb2

FIELD = "contextual_preprocessor.content_encoder"


class SliceContentEncoder(nn.Module):
    """``slice_content_encoder``: candidates sliced to the history width.

    Args:
        config: a ``GRSliceContentEncoder`` message (no fields).
        uih_dim: width of a history item.
        candidate_dim: width of a candidate item (at least ``uih_dim``).
    """

    def __init__(
        self, config: module_pb2.GRSliceContentEncoder | None, uih_dim: int, candidate_dim: int
    ) -> None:
        super().__init__()
        if candidate_dim and candidate_dim < uih_dim:
            raise ConfigError(
                f"{FIELD}.slice_content_encoder: the candidate group is {candidate_dim} wide, "
                f"narrower than the history group ({uih_dim}); use pad_content_encoder or "
                "mlp_content_encoder"
            )
        self.uih_dim = uih_dim

    def output_dim(self) -> int:
        """Width of the output."""
        return self.uih_dim

    def forward(
        self, uih: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Nh, uih_dim), (Nc, candidate_dim) to (Nh, uih_dim), (Nc, uih_dim)."""
        return uih, candidates[:, : self.uih_dim]


class PadContentEncoder(nn.Module):
    """``pad_content_encoder``: history items padded with a learned vector.

    Args:
        config: a ``GRPadContentEncoder`` message (no fields).
        uih_dim: width of a history item.
        candidate_dim: width of a candidate item (more than ``uih_dim``).
    """

    def __init__(
        self, config: module_pb2.GRPadContentEncoder | None, uih_dim: int, candidate_dim: int
    ) -> None:
        super().__init__()
        if candidate_dim <= uih_dim:
            raise ConfigError(
                f"{FIELD}.pad_content_encoder needs a candidate group wider than the history "
                f"group ({candidate_dim} <= {uih_dim}); use slice_content_encoder"
            )
        self.candidate_dim = candidate_dim
        self.filler = nn.Parameter(torch.empty(candidate_dim - uih_dim).normal_(0.0, 0.1))

    def output_dim(self) -> int:
        """Width of the output."""
        return self.candidate_dim

    def forward(
        self, uih: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Nh, uih_dim), (Nc, candidate_dim) to two (N, candidate_dim) tensors."""
        filler = self.filler.to(uih.dtype).unsqueeze(0).expand(uih.shape[0], -1)
        return torch.cat([uih, filler], dim=1), candidates


class MLPContentEncoder(nn.Module):
    """``mlp_content_encoder``: ``uih_mlp`` over history items, ``target_mlp`` over candidates.

    Args:
        config: a ``GRMLPContentEncoder`` message.
        uih_dim: width of a history item.
        candidate_dim: width of a candidate item.
    """

    def __init__(
        self, config: module_pb2.GRMLPContentEncoder, uih_dim: int, candidate_dim: int
    ) -> None:
        super().__init__()
        for name in ("uih_mlp", "target_mlp"):
            if not getattr(config, name).hidden_units:
                raise ConfigError(f"{FIELD}.mlp_content_encoder.{name}: set hidden_units")
        self.uih_mlp = MLP.from_config(uih_dim, config.uih_mlp)
        self.target_mlp = MLP.from_config(candidate_dim or uih_dim, config.target_mlp)
        if self.uih_mlp.output_dim() != self.target_mlp.output_dim():
            raise ConfigError(
                f"{FIELD}.mlp_content_encoder: uih_mlp and target_mlp must end with the same "
                f"width, got {self.uih_mlp.output_dim()} and {self.target_mlp.output_dim()}"
            )

    def output_dim(self) -> int:
        """Width of the output."""
        return self.uih_mlp.output_dim()

    def forward(
        self, uih: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides through their MLP."""
        return self.uih_mlp(uih), self.target_mlp(candidates)


CONTENT_ENCODERS: dict[str, type[nn.Module]] = {
    "slice_content_encoder": SliceContentEncoder,
    "pad_content_encoder": PadContentEncoder,
    "mlp_content_encoder": MLPContentEncoder,
}


def create_content_encoder(
    config: module_pb2.GRContentEncoder, uih_dim: int, candidate_dim: int
) -> nn.Module:
    """The content encoder a ``GRContentEncoder`` names.

    Raises:
        ConfigError: no encoder set, or one this package does not provide.
    """
    chosen = which_oneof(config, "content_encoder")
    if chosen is None:
        raise ConfigError(f"{FIELD}: set slice_content_encoder (or pad_/mlp_content_encoder)")
    name, sub = chosen
    if name not in CONTENT_ENCODERS:
        raise ConfigError(
            f"{FIELD}: {name} is not provided by tzrec-hstu (it provides "
            f"{', '.join(CONTENT_ENCODERS)})"
        )
    return CONTENT_ENCODERS[name](sub, uih_dim, candidate_dim)
