"""MaskNet's instance-guided mask blocks (``MaskBlock`` / ``MaskNetModule`` config messages).

A mask block re-weights its input element-wise by a mask computed from the raw feature
embedding ``e`` (two-layer "aggregation -> projection" net), then applies a feed-forward
layer: ``MaskBlock(x, e) = ReLU(LN(W_h (x * (W_2 ReLU(W_1 e + b_1) + b_2))))``.
``MaskNetModule`` stacks them in parallel (every block reads ``LN(e)``, outputs are
concatenated) or serially (block 1 reads ``LN(e)``, block ``k`` reads block ``k-1``'s
output; every mask still comes from ``e``), optionally followed by a top MLP. Used by
MaskNet (tzrec-rank) and DBMTL's ``mask_net`` bottom.
"""

from __future__ import annotations

import torch
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.models.modules.mlp import MLP
from tzrec.protos import module_pb2


def aggregation_dim(input_dim: int, config: module_pb2.MaskBlock) -> int:
    """Width of a block's mask aggregation layer for an input of ``input_dim``.

    ``int(input_dim * reduction_ratio)`` when a non-zero ``reduction_ratio`` is set (or when
    ``aggregation_dim`` is not set: the ratio's default 1), else ``aggregation_dim``, as
    upstream's documentation states.

    Raises:
        ConfigError: the resulting width is not positive.
    """
    explicit_ratio = config.HasField("reduction_ratio") and config.reduction_ratio != 0
    if explicit_ratio or not config.HasField("aggregation_dim"):
        dim = int(input_dim * config.reduction_ratio)
        source = f"int({input_dim} * reduction_ratio {config.reduction_ratio:g})"
    else:
        dim = int(config.aggregation_dim)
        source = "aggregation_dim"
    if dim <= 0:
        raise ConfigError(f"MaskBlock: the aggregation width {source} = {dim} must be > 0")
    return dim


class MaskBlock(nn.Module):
    """One mask block: ``FFN(x * mask(e))`` with ``FFN = ReLU(LayerNorm(Linear(.)))``.

    Args:
        input_dim: width of ``x`` (the feature width in parallel mode / for the first serial
            block, else the previous block's ``hidden_dim``).
        mask_input_dim: width of ``e``, the raw feature embedding the mask is computed from.
        hidden_dim: output width.
        aggregation_dim: width of the mask net's hidden (aggregation) layer.
    """

    def __init__(
        self, input_dim: int, mask_input_dim: int, hidden_dim: int, aggregation_dim: int
    ) -> None:
        super().__init__()
        if hidden_dim <= 0 or aggregation_dim <= 0:
            raise ConfigError(
                f"MaskBlock: hidden_dim ({hidden_dim}) and the aggregation width "
                f"({aggregation_dim}) must be > 0"
            )
        self.mask_generator = nn.Sequential(
            nn.Linear(mask_input_dim, aggregation_dim),
            nn.ReLU(),
            nn.Linear(aggregation_dim, input_dim),
        )
        self.ffn = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU()
        )
        self._hidden_dim = hidden_dim

    def output_dim(self) -> int:
        """Width of the output (``hidden_dim``)."""
        return self._hidden_dim

    def forward(self, x: torch.Tensor, mask_input: torch.Tensor) -> torch.Tensor:
        """``(B, hidden_dim)`` from ``x (B, input_dim)`` masked by ``mask(mask_input)``."""
        return self.ffn(x * self.mask_generator(mask_input))


class MaskNetModule(nn.Module):
    """Parallel or serial mask blocks over one feature embedding, then an optional top MLP.

    Args:
        feature_dim: width of the feature embedding ``e``.
        n_mask_blocks: number of blocks (at least one).
        mask_block: each block's ``MaskBlock`` config (``hidden_dim``, aggregation width).
        top_mlp: the ``MLP`` applied to the blocks' output, or None.
        use_parallel: parallel blocks (outputs concatenated) instead of a serial chain.
    """

    def __init__(
        self,
        feature_dim: int,
        n_mask_blocks: int,
        mask_block: module_pb2.MaskBlock,
        top_mlp: module_pb2.MLP | None = None,
        use_parallel: bool = True,
    ) -> None:
        super().__init__()
        if n_mask_blocks <= 0:
            raise ConfigError(f"MaskNetModule.n_mask_blocks must be > 0, got {n_mask_blocks}")
        self.use_parallel = use_parallel
        self.ln_emb = nn.LayerNorm(feature_dim)
        hidden = int(mask_block.hidden_dim)
        self.mask_blocks = nn.ModuleList()
        width = feature_dim
        for _ in range(n_mask_blocks):
            in_dim = feature_dim if use_parallel else width
            agg = aggregation_dim(in_dim, mask_block)
            self.mask_blocks.append(MaskBlock(in_dim, feature_dim, hidden, agg))
            width = hidden
        self._output_dim = hidden * n_mask_blocks if use_parallel else hidden
        self.top_mlp = MLP.from_config(self._output_dim, top_mlp) if top_mlp else None
        if self.top_mlp is not None:
            self._output_dim = self.top_mlp.output_dim()

    @classmethod
    def from_config(cls, feature_dim: int, config: module_pb2.MaskNetModule) -> MaskNetModule:
        """Build from a ``MaskNetModule`` config message."""
        return cls(
            feature_dim,
            int(config.n_mask_blocks),
            config.mask_block,
            config.top_mlp if config.HasField("top_mlp") else None,
            bool(config.use_parallel),
        )

    def output_dim(self) -> int:
        """Width of the output (the top MLP's, else the blocks')."""
        return self._output_dim

    def forward(self, feature_emb: torch.Tensor) -> torch.Tensor:
        """``(B, output_dim)`` from the feature embedding ``(B, feature_dim)``."""
        normed = self.ln_emb(feature_emb)
        if self.use_parallel:
            hidden = torch.cat([block(normed, feature_emb) for block in self.mask_blocks], dim=-1)
        else:
            hidden = normed
            for block in self.mask_blocks:
                hidden = block(hidden, feature_emb)
        if self.top_mlp is not None:
            hidden = self.top_mlp(hidden)
        return hidden
