"""Activation modules built from config strings such as ``"nn.ReLU"`` or ``"Dice"``."""

from __future__ import annotations

import ast
import importlib

import torch
from torch import nn


class Dice(nn.Module):
    """Data-adaptive activation from DIN: ``p * x + alpha * (1 - p) * x``, ``p = sigmoid(bn(x))``.

    Args:
        hidden_size: channel dimension of the input.
        dim: rank of the input, 2 for ``(B, C)`` or 3 for ``(B, L, C)``.
    """

    def __init__(self, hidden_size: int, dim: int = 2) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"Dice supports 2-D or 3-D inputs, got dim={dim}")
        self.dim = dim
        self.bn = nn.BatchNorm1d(hidden_size, affine=False)
        self.alpha = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation."""
        if self.dim == 2:
            p = torch.sigmoid(self.bn(x))
            return self.alpha * (1 - p) * x + p * x
        xt = x.transpose(1, 2)
        p = torch.sigmoid(self.bn(xt))
        out = self.alpha.unsqueeze(1) * (1 - p) * xt + p * xt
        return out.transpose(1, 2)


def _resolve(name: str) -> type:
    if name.startswith("torch.nn."):
        name = "nn." + name[len("torch.nn.") :]
    if name.startswith("nn."):
        obj = getattr(nn, name[3:], None)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
        raise ValueError(f"unknown activation '{name}': torch.nn has no module {name[3:]!r}")
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise ValueError(f"unknown activation '{name}'; use e.g. 'nn.ReLU' or 'Dice'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"unknown activation '{name}': {e}") from None
    return obj


def _parse_params(text: str, activation: str) -> dict[str, object]:
    params: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"cannot parse activation '{activation}': expected key=value")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(
                f"cannot parse activation '{activation}': bad value {value.strip()!r}"
            ) from None
    return params


def create_activation(activation: str, hidden_size: int = 0, dim: int = 2) -> nn.Module | None:
    """Build an activation module from its config string.

    ``""`` means no activation (``None``); ``"Dice"`` is DIN's Dice; anything else is a
    module class path (``"nn.ReLU"``, ``"nn.SiLU"``, ``"torch.nn.GELU"``) optionally with
    literal keyword arguments: ``"nn.LeakyReLU(negative_slope=0.1)"``.

    Raises:
        ValueError: the string names no known module or its arguments cannot be parsed.
    """
    act = activation.strip()
    if not act:
        return None
    if act == "Dice":
        return Dice(hidden_size, dim)
    name, _, rest = act.partition("(")
    params = _parse_params(rest.rstrip(")"), act) if rest else {}
    cls = _resolve(name.strip())
    return cls(**params)
