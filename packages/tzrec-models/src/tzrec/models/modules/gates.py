"""Gates of multi-task models: softmax expert mixtures and PEPNet's gate neural units.

* :func:`mix_experts`: ``out = sum_e softmax(g)_e * expert_e`` for gate logits ``g (B, E)``
  and stacked expert outputs ``(B, E, D)`` (MMoE's and PLE's gates).
* :class:`GateNU`: ``gamma * sigmoid(W2 relu(W1 x + b1) + b2)``, a scale in ``(0, gamma)``
  per output column (PEPNet).
* :class:`EPNet`: ``GateNU([domain, stop_grad(main)]) * main`` (embedding personalisation).
* :class:`PPNet`: one MLP per task whose layer ``l`` output is ``dropout(act(W_l h) *
  GateNU_l([uia, stop_grad(main)]))`` (parameter personalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tzrec.models.modules.activation import create_activation
from tzrec.models.modules.mlp import _dropout_per_layer


def mix_experts(gate_logits: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` softmax-weighted sum of ``(B, E, D)`` expert outputs by ``(B, E)`` logits."""
    weights = torch.softmax(gate_logits, dim=-1).unsqueeze(1)
    return torch.matmul(weights, experts).squeeze(1)


class GateNU(nn.Module):
    """Gate neural unit: ``gamma * sigmoid(Linear(ReLU(Linear(x))))``.

    Args:
        input_dim: width of the gate input.
        hidden_dim: width of the hidden layer.
        output_dim: width of the gate (the tensor it scales).
        gamma: the gate's upper bound (2.0: the identity scale sits in the middle).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, gamma: float = 2.0):
        super().__init__()
        self.gamma = float(gamma)
        self._output_dim = output_dim
        self.dense_layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, output_dim),
            nn.Sigmoid(),
        )

    def output_dim(self) -> int:
        """Width of the gate."""
        return self._output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, output_dim)`` scale in ``(0, gamma)``."""
        return self.gamma * self.dense_layers(x)


class EPNet(nn.Module):
    """Embedding personalisation: scales the main embedding by a domain-conditioned gate.

    Args:
        main_dim: width of the main group's embedding.
        domain_dim: width of the domain group's embedding.
        hidden_dim: hidden width of the gate.
        gamma: the gate's upper bound.
    """

    def __init__(self, main_dim: int, domain_dim: int, hidden_dim: int, gamma: float = 2.0):
        super().__init__()
        self.gate_nu = GateNU(domain_dim + main_dim, hidden_dim, main_dim, gamma)

    def output_dim(self) -> int:
        """Width of the personalised embedding (the main embedding's)."""
        return self.gate_nu.output_dim()

    def forward(self, main_emb: torch.Tensor, domain_emb: torch.Tensor) -> torch.Tensor:
        """``GateNU([domain, main.detach()]) * main``."""
        gate = self.gate_nu(torch.cat([domain_emb, main_emb.detach()], dim=-1))
        return gate * main_emb


class PPNet(nn.Module):
    """Parameter personalisation: per-task MLPs whose layers are scaled by gate units.

    Args:
        main_dim: width of the (personalised) main embedding, the MLPs' input.
        uia_dim: width of the user/item/author group feeding the gates.
        num_task: number of task MLPs.
        hidden_units: widths of each task MLP's layers.
        activation: activation of every layer (``create_activation`` string).
        dropout_ratio: one ratio, or one per layer.
        gamma: the gates' upper bound.
    """

    def __init__(
        self,
        main_dim: int,
        uia_dim: int,
        num_task: int,
        hidden_units: Sequence[int],
        activation: str = "nn.ReLU",
        dropout_ratio: float | Sequence[float] | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.hidden_units = [int(u) for u in hidden_units]
        if not self.hidden_units:
            raise ValueError("PPNet: hidden_units must name at least one layer")
        ratios = _dropout_per_layer(dropout_ratio, len(self.hidden_units))
        self.num_task = num_task
        self.towers = nn.ModuleList()
        for _ in range(num_task):
            layers = nn.ModuleList()
            width = main_dim
            for units, ratio in zip(self.hidden_units, ratios, strict=True):
                act = create_activation(activation, hidden_size=units, dim=2)
                layers.append(
                    nn.ModuleDict(
                        {
                            "linear": nn.Linear(width, units),
                            "activation": act if act is not None else nn.Identity(),
                            "gate": GateNU(main_dim + uia_dim, units, units, gamma),
                            "dropout": nn.Dropout(ratio),
                        }
                    )
                )
                width = units
            self.towers.append(layers)

    def output_dim(self) -> int:
        """Width of each task's output."""
        return self.hidden_units[-1]

    def forward(self, main_emb: torch.Tensor, uia_emb: torch.Tensor) -> list[torch.Tensor]:
        """One ``(B, hidden_units[-1])`` output per task."""
        gate_input = torch.cat([uia_emb, main_emb.detach()], dim=-1)
        outputs = []
        for layers in self.towers:
            x = main_emb
            for layer in layers:
                x = layer["activation"](layer["linear"](x)) * layer["gate"](gate_input)
                x = layer["dropout"](x)
            outputs.append(x)
        return outputs
