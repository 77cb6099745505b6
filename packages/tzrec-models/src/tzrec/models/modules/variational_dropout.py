"""Feature selection by learned (concrete) dropout: ``model_config.variational_dropout``.

Each feature of a grouped input gets a learned dropout logit ``theta``; ``p = sigmoid(theta)``
is its dropout probability. With ``x`` the ``(B, D)`` group output and ``col(j)`` the
feature owning column ``j``:

* training: ``u ~ U(0, 1)``, ``z = sigmoid((log(p+e) - log(1-p+e) + log(u+e) - log(1-u+e))
  / 0.1)`` (a relaxed Bernoulli(p) draw per row and feature, ``e`` = float32 eps) and
  ``y[:, j] = x[:, j] * (1 - z[:, col(j)])``;
* evaluation / serving: the expectation, ``y[:, j] = x[:, j] * (1 - p[col(j)])``;
* the loss term ``lambda / B * sum_f (1 - p_f)`` rewards dropping features, so features the
  model does not need drift to ``p -> 1``; a low ``p`` marks an important feature.

With ``embedding_wise_variational_dropout`` every column has its own logit and a feature's
importance is the mean ``p`` of its columns.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.models.embedding import EmbeddingGroup
from tzrec.protos import model_pb2

#: temperature of the concrete (relaxed Bernoulli) sample
CONCRETE_TEMPERATURE = 0.1
#: suffix of the loss names (``<group>_feature_p_loss``, as upstream)
LOSS_SUFFIX = "_feature_p_loss"


class VariationalDropout(nn.Module):
    """Learned per-feature dropout over one group's ``(B, D)`` output.

    Args:
        feature_dims: output width of each feature of the group, in column order.
        group_name: the feature group (names the loss term and the importance output).
        regularization_lambda: weight of the ``sum(1 - p)`` penalty.
        embedding_wise: one logit per output column instead of one per feature.
    """

    def __init__(
        self,
        feature_dims: dict[str, int],
        group_name: str,
        regularization_lambda: float = 0.01,
        embedding_wise: bool = False,
    ) -> None:
        super().__init__()
        if not feature_dims or any(d <= 0 for d in feature_dims.values()):
            raise ConfigError(
                f"model_config.variational_dropout: group '{group_name}' needs features of "
                f"positive width, got {feature_dims}"
            )
        self.group_name = group_name
        self.feature_dims = dict(feature_dims)
        self.regularization_lambda = float(regularization_lambda)
        self.embedding_wise = bool(embedding_wise)
        widths = list(self.feature_dims.values())
        total = sum(widths)
        # owner feature of every column, and the logit index of every column
        owner = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
        self.register_buffer("_owner", owner, persistent=False)
        # (a copy: TorchScript tracing refuses one tensor under two buffer names)
        logit_of_col = torch.arange(total) if self.embedding_wise else owner.clone()
        self.register_buffer("_logit_of_col", logit_of_col, persistent=False)
        self.feature_p = nn.Parameter(torch.randn(total if self.embedding_wise else len(widths)))

    def dropout_p(self) -> torch.Tensor:
        """Dropout probability of every logit (per feature, or per column if embedding-wise)."""
        return torch.sigmoid(self.feature_p)

    def feature_dropout_p(self) -> dict[str, float]:
        """Mean dropout probability of each feature's columns, by feature name."""
        p = self.dropout_p().detach().float().cpu()
        if self.embedding_wise:
            sums = torch.zeros(len(self.feature_dims)).index_add_(0, self._owner.cpu(), p)
            counts = torch.tensor(list(self.feature_dims.values()), dtype=torch.float32)
            p = sums / counts
        return {name: float(v) for name, v in zip(self.feature_dims, p.tolist(), strict=True)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(noisy or expected-scaled x, lambda / B * sum(1 - p))``."""
        p = self.dropout_p()
        if self.training:
            eps = torch.finfo(torch.float32).eps
            u = torch.rand(x.size(0), p.numel(), device=x.device, dtype=p.dtype)
            logit = (
                torch.log(p + eps)
                - torch.log(1.0 - p + eps)
                + torch.log(u + eps)
                - torch.log(1.0 - u + eps)
            )
            drop = torch.sigmoid(logit / CONCRETE_TEMPERATURE)[:, self._logit_of_col]
        else:
            drop = p[self._logit_of_col].unsqueeze(0)
        out = x * (1.0 - drop).to(x.dtype)
        penalty = self.regularization_lambda / x.size(0) * torch.sum(1.0 - p)
        return out, penalty


def group_feature_dims(embedding_group: EmbeddingGroup, group: str) -> dict[str, int]:
    """Width of each part of a DEEP/WIDE group's output, in column order.

    Parts are the group's own features (by name; a feature read twice is named by its
    lookup key) followed by each ``sequence_encoders`` entry (by its ``sequence_groups``
    input), matching the column order of :class:`EmbeddingGroup`'s output.
    """
    spec = embedding_group.layout.group(group)
    dims: dict[str, int] = {}
    for slot in spec.query:
        name = slot.feature.name if slot.feature.name not in dims else slot.key
        dims[name] = dims.get(name, 0) + slot.width
    encoders = embedding_group.sequence_encoders.encoders
    if group in encoders:
        for enc in encoders[group]:
            name = f"{enc.input()}" if enc.input() not in dims else f"{group}.{enc.input()}"
            dims[name] = enc.output_dim()
    return dims


def build_group_variational_dropouts(
    model_config: model_pb2.ModelConfig,
    embedding_group: EmbeddingGroup,
    groups: Sequence[str],
) -> nn.ModuleDict | None:
    """One :class:`VariationalDropout` per listed non-sequence group of >1 feature (upstream).

    None when ``model_config.variational_dropout`` is unset.
    """
    if not model_config.HasField("variational_dropout"):
        return None
    cfg = model_config.variational_dropout
    if cfg.regularization_lambda < 0:
        raise ConfigError(
            "model_config.variational_dropout.regularization_lambda: must be >= 0, "
            f"got {cfg.regularization_lambda}"
        )
    out = nn.ModuleDict()
    for group in groups:
        if embedding_group.group_type(group) not in (model_pb2.DEEP, model_pb2.WIDE):
            continue
        dims = group_feature_dims(embedding_group, group)
        if len(dims) > 1:
            out[group] = VariationalDropout(
                dims,
                group,
                cfg.regularization_lambda,
                cfg.embedding_wise_variational_dropout,
            )
    return out


def apply_group_variational_dropouts(
    dropouts: nn.ModuleDict | None, grouped: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``grouped`` with each group's dropout applied, and the loss terms by loss name."""
    if dropouts is None or len(dropouts) == 0:
        return grouped, {}
    out = dict(grouped)
    losses: dict[str, torch.Tensor] = {}
    for group, dropout in dropouts.items():
        if group not in out:
            continue
        out[group], losses[group + LOSS_SUFFIX] = dropout(out[group])
    return out, losses


def feature_importance(model: nn.Module) -> dict[str, list[tuple[str, float]]]:
    """Each group's features with their learned dropout probability, most important first.

    Reads every :class:`VariationalDropout` of ``model`` (restored from a checkpoint);
    ordered by ascending ``p`` (upstream's order). A ConfigError if there is none.
    """
    result: dict[str, list[tuple[str, float]]] = {}
    for module in model.modules():
        if isinstance(module, VariationalDropout):
            ranked = sorted(module.feature_dropout_p().items(), key=lambda kv: kv[1])
            result[module.group_name] = ranked
    if not result:
        raise ConfigError(
            "model_config.variational_dropout: the model has no variational dropout layer "
            "(unset, or no group has more than one feature)"
        )
    return result


def write_feature_importance(
    model: nn.Module, output_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write ``feature_dropout_ratio_<group>.csv`` (``feature_name,mean_drop_p``) per group.

    Upstream's feature-selection output format; returns the written files by group.
    """
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for group, ranked in feature_importance(model).items():
        path = out_dir / f"feature_dropout_ratio_{group}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["feature_name", "mean_drop_p"])
            writer.writerows(ranked)
        written[group] = path
    return written
