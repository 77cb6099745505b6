"""Multi-layer perceptron built from the ``MLP`` config message."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tzrec.models.modules.activation import create_activation
from tzrec.protos import module_pb2


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class Perceptron(nn.Module):
    """One layer: linear, optional batch/layer norm, activation, optional dropout.

    Args:
        in_features: input width.
        out_features: output width.
        activation: activation string (see :func:`create_activation`); ``""`` for none.
        use_bn: batch-normalise the linear output (the linear then has no bias).
        bias: give the linear layer a bias.
        dropout_ratio: dropout after the activation; 0 for none.
        use_ln: layer-normalise the linear output.
        dim: rank of the input, 2 for ``(B, C)`` or 3 for ``(B, L, C)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "nn.ReLU",
        use_bn: bool = False,
        bias: bool = True,
        dropout_ratio: float = 0.0,
        use_ln: bool = False,
        dim: int = 2,
    ) -> None:
        super().__init__()
        if use_bn and use_ln:
            raise ValueError("MLP: use_bn and use_ln cannot both be set")
        if dim not in (2, 3):
            raise ValueError(f"MLP supports 2-D or 3-D inputs, got dim={dim}")
        layers: list[nn.Module] = [nn.Linear(in_features, out_features, bias=bias and not use_bn)]
        if use_bn:
            if dim == 3:
                layers += [_Transpose(), nn.BatchNorm1d(out_features), _Transpose()]
            else:
                layers.append(nn.BatchNorm1d(out_features))
        if use_ln:
            layers.append(nn.LayerNorm(out_features))
        act = create_activation(activation, hidden_size=out_features, dim=dim)
        if act is not None:
            layers.append(act)
        if dropout_ratio > 0.0:
            layers.append(nn.Dropout(dropout_ratio))
        self.perceptron = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer."""
        return self.perceptron(x)


def _dropout_per_layer(dropout_ratio: float | Sequence[float] | None, n: int) -> list[float]:
    if dropout_ratio is None:
        return [0.0] * n
    if isinstance(dropout_ratio, int | float):
        return [float(dropout_ratio)] * n
    ratios = [float(r) for r in dropout_ratio]
    if not ratios:
        return [0.0] * n
    if len(ratios) == 1:
        return ratios * n
    if len(ratios) != n:
        raise ValueError(
            f"MLP: dropout_ratio has {len(ratios)} values but hidden_units has {n}; "
            "give one value or one per layer"
        )
    return ratios


class MLP(nn.Module):
    """A stack of :class:`Perceptron` layers.

    Args:
        in_features: input width.
        hidden_units: output width of each layer (at least one).
        bias: give the linear layers a bias.
        activation: activation string for every layer; ``""`` for none.
        use_bn: batch-normalise each layer.
        dropout_ratio: one ratio for all layers, or one per layer.
        use_ln: layer-normalise each layer.
        dim: rank of the input, 2 for ``(B, C)`` or 3 for ``(B, L, C)``.

    ``forward`` returns the last layer's output; :meth:`hidden_layer_features` returns every
    layer's (upstream's ``return_hidden_layer_feature``), so ``forward`` has one return type
    and scripts cleanly.
    """

    def __init__(
        self,
        in_features: int,
        hidden_units: Sequence[int],
        bias: bool = True,
        activation: str = "nn.ReLU",
        use_bn: bool = False,
        dropout_ratio: float | Sequence[float] | None = None,
        use_ln: bool = False,
        dim: int = 2,
    ) -> None:
        super().__init__()
        self.hidden_units = [int(u) for u in hidden_units]
        if not self.hidden_units:
            raise ValueError("MLP: hidden_units must name at least one layer")
        self.dropout_ratio = _dropout_per_layer(dropout_ratio, len(self.hidden_units))
        widths = [in_features, *self.hidden_units]
        self.mlp = nn.ModuleList(
            Perceptron(
                widths[i],
                widths[i + 1],
                activation=activation,
                use_bn=use_bn,
                bias=bias,
                dropout_ratio=self.dropout_ratio[i],
                use_ln=use_ln,
                dim=dim,
            )
            for i in range(len(self.hidden_units))
        )

    @classmethod
    def from_config(cls, in_features: int, config: module_pb2.MLP, dim: int = 2) -> MLP:
        """Build from an ``MLP`` config message."""
        return cls(in_features, dim=dim, **mlp_kwargs(config))

    def output_dim(self) -> int:
        """Width of the output."""
        return self.hidden_units[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers in order."""
        for layer in self.mlp:
            x = layer(x)
        return x

    def hidden_layer_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output: ``hidden_layer{i}`` and ``hidden_layer_end`` (the last)."""
        hidden: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            hidden[f"hidden_layer{i}"] = x
        hidden["hidden_layer_end"] = x
        return hidden


def mlp_kwargs(config: module_pb2.MLP) -> dict[str, object]:
    """The keyword arguments of :class:`MLP` that an ``MLP`` config message sets."""
    return {
        "hidden_units": list(config.hidden_units),
        "dropout_ratio": list(config.dropout_ratio),
        "activation": config.activation,
        "use_bn": config.use_bn,
        "bias": config.bias,
        "use_ln": config.use_ln,
    }
