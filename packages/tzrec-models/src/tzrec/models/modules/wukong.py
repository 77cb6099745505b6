"""WuKong's interaction layer (``WuKongLayer`` config message): FM block + linear compress block.

On ``X (B, F, D)`` (F feature embeddings of width D):

- linear compress block: ``LCB(X) = W_l^T X`` with ``W_l (F, F_lcb)``, mixing features only;
- optimized FM block: ``FMB(X) = reshape(Linear(MLP(LN(flatten(X X^T W_f)))), (F_fmb, D))``
  with ``W_f (F, k)``, ``k = compressed_feature_num``: the pairwise dot products ``X X^T``
  compressed to ``k`` columns, so the cost is ``F * k`` instead of ``F^2``;
- the layer: ``LN_D(concat(FMB(X), LCB(X)) + R(X))`` where ``R`` is the identity when
  ``F == F_fmb + F_lcb`` and a linear compress block to that many features otherwise.

Stacked layers raise the interaction order exponentially (layer ``i`` holds interactions of
order up to ``2^i``).
"""

from __future__ import annotations

import torch
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.models.modules.mlp import MLP
from tzrec.protos import module_pb2


class LinearCompressBlock(nn.Module):
    """``(B, F_in, D) -> (B, F_out, D)``: each output feature a learned mix of the inputs.

    Args:
        feature_num_in: number of input features ``F_in``.
        feature_num_out: number of output features ``F_out``.
    """

    def __init__(self, feature_num_in: int, feature_num_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(feature_num_in, feature_num_out))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``out[b, o, d] = sum_f x[b, f, d] * W[f, o]``."""
        return torch.einsum("bfd,fo->bod", x, self.weight)


class FactorizationMachineBlock(nn.Module):
    """Optimized FM block: compressed pairwise dot products, LN, MLP, projected to features.

    Args:
        input_dim: embedding width ``D``.
        feature_num_in: number of input features ``F``.
        feature_num_out: number of output features ``F_out``.
        compressed_feature_num: columns ``k`` the ``F x F`` dot products are compressed to.
        feature_num_mlp: the ``MLP`` on the flattened ``F * k`` interactions.
    """

    def __init__(
        self,
        input_dim: int,
        feature_num_in: int,
        feature_num_out: int,
        compressed_feature_num: int,
        feature_num_mlp: module_pb2.MLP,
    ) -> None:
        super().__init__()
        self._input_dim = input_dim
        self._feature_num_out = feature_num_out
        width = feature_num_in * compressed_feature_num
        self.weight = nn.Parameter(torch.empty(feature_num_in, compressed_feature_num))
        nn.init.kaiming_uniform_(self.weight)
        self.norm = nn.LayerNorm(width)
        self.mlp = MLP.from_config(width, feature_num_mlp)
        # upstream's parameter name (sic), so checkpoints' keys match
        self.feature_out_liner = nn.Linear(self.mlp.output_dim(), feature_num_out * input_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, F_out, D)``."""
        compressed = torch.einsum("bfd,fk->bdk", x, self.weight)  # X^T W
        inter = torch.bmm(x, compressed).flatten(1)  # X X^T W, (B, F * k)
        out = self.feature_out_liner(self.mlp(self.norm(inter)))
        return out.reshape(-1, self._feature_num_out, self._input_dim)


class WuKongLayer(nn.Module):
    """One WuKong layer: ``LN_D(concat(FMB(X), LCB(X)) + residual(X))``.

    Args:
        input_dim: embedding width ``D``.
        feature_num: number of input features ``F``.
        lcb_feature_num: features the linear compress block outputs.
        fmb_feature_num: features the FM block outputs.
        compressed_feature_num: the FM block's compression width ``k``.
        feature_num_mlp: the FM block's ``MLP``.
    """

    def __init__(
        self,
        input_dim: int,
        feature_num: int,
        lcb_feature_num: int,
        fmb_feature_num: int,
        compressed_feature_num: int,
        feature_num_mlp: module_pb2.MLP,
    ) -> None:
        super().__init__()
        for name, value in (
            ("lcb_feature_num", lcb_feature_num),
            ("fmb_feature_num", fmb_feature_num),
            ("compressed_feature_num", compressed_feature_num),
        ):
            if value <= 0:
                raise ConfigError(f"WuKongLayer.{name} must be > 0, got {value}")
        self._output_feature_num = lcb_feature_num + fmb_feature_num
        self.lcb = LinearCompressBlock(feature_num, lcb_feature_num)
        self.fmb = FactorizationMachineBlock(
            input_dim, feature_num, fmb_feature_num, compressed_feature_num, feature_num_mlp
        )
        self.norm = nn.LayerNorm(input_dim)
        self.residual_projection: nn.Module = (
            nn.Identity()
            if feature_num == self._output_feature_num
            else LinearCompressBlock(feature_num, self._output_feature_num)
        )

    @classmethod
    def from_config(
        cls, input_dim: int, feature_num: int, config: module_pb2.WuKongLayer
    ) -> WuKongLayer:
        """Build from a ``WuKongLayer`` config message."""
        return cls(
            input_dim,
            feature_num,
            int(config.lcb_feature_num),
            int(config.fmb_feature_num),
            int(config.compressed_feature_num),
            config.feature_num_mlp,
        )

    def output_feature_num(self) -> int:
        """Number of output features (``fmb_feature_num + lcb_feature_num``)."""
        return self._output_feature_num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, fmb_feature_num + lcb_feature_num, D)``."""
        out = torch.cat([self.fmb(x), self.lcb(x)], dim=1)
        return self.norm(out + self.residual_projection(x))
