"""B2I capsule layer with dynamic routing (MIND's multi-interest extractor).

Given a behaviour sequence ``x`` ``(B, L, Dl)`` with lengths ``n`` and a ``B2ICapsule``
config (``max_seq_len`` M, ``max_k`` K, ``high_dim`` Dh, ``num_iters`` T,
``routing_logits_scale`` s, ``routing_logits_stddev`` σ, ``squash_pow`` p,
``const_caps_num``, ``routing_init_method``), as upstream:

- ``x`` is cut or zero-padded to M positions; positions ``>= n`` are masked to zero;
- each row gets ``K_b = K`` interests (``const_caps_num``) or the integers ``k < max(1,
  min(K, log2 n_b))`` (``K_b = ceil`` of that bound, 1 for an empty history);
- low capsules ``c = x W`` with ``W`` ``(Dl, Dh)`` (standard normal init); ``ĉ = detach(c)``,
  ``ĉn = ĉ / ||ĉ||``;
- routing logits ``b0`` ``(B, M, K)``: ``σ · N(0, 1)`` (``normal``) or zeros, not trained;
- for ``t < T``: ``b[:, :, k] = -inf`` for ``k >= K_b``; ``w = softmax(s · b, over k) ·
  mask_s``; before the last iteration ``z_k = Σ_s w_sk ĉ_s`` and ``b = w + <z_k, ĉn_s>``
  (the agreement is added to the routing weights, as upstream); at the last one
  ``z_k = Σ_s w_sk c_s`` (gradients reach ``W`` only here);
- interests ``squash(z) = (|z|² / (1 + |z|²))^p · z / |z|`` (``|z| >= 1e-7``), rows
  ``k >= K_b`` zeroed.

Deviation: upstream draws fresh ``normal`` routing logits on every forward, also in
evaluation and serving, so its served interests are random. Here training draws fresh
logits; evaluation and the exported model use one draw (``(M, K)``, made at construction
and stored with the weights), so an export equals the eager model and serving is
deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tzrec.core.errors import ConfigError
from tzrec.protos import module_pb2

ROUTING_INIT_METHODS = ("normal", "zeros")
_NORM_EPS = 1e-7


def sequence_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, max_len)`` bool, True at positions ``< lengths[b]`` (lengths may be float)."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def squash(inputs: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``(|z|² / (1 + |z|²))^power · z / |z|`` over the last dim (``|z|`` at least 1e-7)."""
    norm = torch.linalg.norm(inputs, dim=-1, keepdim=True).clamp(min=_NORM_EPS)
    sq = norm * norm
    return torch.pow(sq / (1.0 + sq), power) / norm * inputs


def capsule_mask(seq_len: torch.Tensor, max_k: int, const_caps_num: bool) -> torch.Tensor:
    """``(B, max_k)`` bool: which interests a row has (all, or by ``log2`` of its length)."""
    if const_caps_num:
        count = torch.full_like(seq_len, max_k, dtype=torch.float32)
    else:
        count = torch.log2(seq_len.to(torch.float32)).clamp(min=1.0, max=float(max_k))
    return sequence_mask(count, max_k)


class CapsuleLayer(nn.Module):
    """B2I dynamic routing from a behaviour sequence to up to ``max_k`` interests.

    Args:
        config: a ``B2ICapsule`` message.
        input_dim: width ``Dl`` of one sequence item.
        field: the config path named in errors.

    Raises:
        ConfigError: a size that is not positive or an unknown ``routing_init_method``.
    """

    def __init__(
        self, config: module_pb2.B2ICapsule, input_dim: int, field: str = "capsule_config"
    ) -> None:
        super().__init__()
        for name in ("max_k", "max_seq_len", "high_dim", "num_iters"):
            if getattr(config, name) <= 0:
                raise ConfigError(f"{field}.{name}: must be > 0, got {getattr(config, name)}")
        if config.routing_init_method not in ROUTING_INIT_METHODS:
            raise ConfigError(
                f"{field}.routing_init_method: expected one of "
                f"{', '.join(ROUTING_INIT_METHODS)}, got {config.routing_init_method!r}"
            )
        self.max_k = int(config.max_k)
        self.max_seq_len = int(config.max_seq_len)
        self.high_dim = int(config.high_dim)
        self.num_iters = int(config.num_iters)
        self.routing_logits_scale = float(config.routing_logits_scale)
        self.routing_logits_stddev = float(config.routing_logits_stddev)
        self.squash_pow = float(config.squash_pow)
        self.const_caps_num = bool(config.const_caps_num)
        self.routing_init_method = str(config.routing_init_method)
        self.bilinear_matrix = nn.Parameter(torch.randn(int(input_dim), self.high_dim))
        #: the routing logits evaluation and serving start from (see the module doc)
        self.register_buffer(
            "eval_routing_logits", torch.randn(self.max_seq_len, self.max_k), persistent=True
        )

    def output_dim(self) -> int:
        """Width of one interest (``high_dim``)."""
        return self.high_dim

    def initial_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, M, K)`` starting routing logits (``σ · N(0, 1)`` or zeros), detached."""
        shape = (inputs.size(0), self.max_seq_len, self.max_k)
        if self.routing_init_method == "zeros":
            return inputs.new_zeros(shape)
        if self.training:
            logits = torch.randn(shape, device=inputs.device, dtype=inputs.dtype)
        else:
            logits = self.eval_routing_logits.to(inputs.dtype).unsqueeze(0).expand(shape)
        return logits * self.routing_logits_stddev

    def fit_length(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, M, Dl)``: the first M positions of ``inputs``, zero-padded.

        Padding by M before cutting holds for any length L without a branch or a guard on
        L vs M, so the layer traces and ``torch.export``s with a dynamic L.
        """
        return F.pad(inputs, (0, 0, 0, self.max_seq_len))[:, : self.max_seq_len, :]

    def dynamic_routing(
        self,
        inputs: torch.Tensor,
        seq_mask: torch.Tensor,
        caps_mask: torch.Tensor,
        logits: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, K, Dh)`` squashed high capsules (module doc), before masking rows ``>= K_b``.

        Args:
            inputs: ``(B, M, Dl)`` masked sequence.
            seq_mask: ``(B, M)`` valid positions.
            caps_mask: ``(B, K)`` valid interests.
            logits: ``(B, M, K)`` starting routing logits.
        """
        limit = torch.where(caps_mask, float("inf"), float("-inf")).unsqueeze(1)
        position = seq_mask.unsqueeze(2).to(inputs.dtype)
        low = torch.einsum("bsl,lh->bsh", inputs, self.bilinear_matrix)
        low_fixed = low.detach()
        low_unit = F.normalize(low_fixed, p=2.0, dim=-1)
        logits = logits.detach()
        high = low.new_zeros(low.size(0), self.max_k, self.high_dim)
        for it in range(self.num_iters):
            weights = torch.softmax(torch.minimum(logits, limit) * self.routing_logits_scale, 2)
            weights = weights * position
            if it + 1 < self.num_iters:
                high = torch.einsum("bsk,bsh->bkh", weights, low_fixed)
                logits = weights + torch.einsum("bkh,bsh->bsk", high, low_unit)
            else:
                high = torch.einsum("bsk,bsh->bkh", weights, low)
        return squash(high, self.squash_pow)

    def forward(
        self, inputs: torch.Tensor, seq_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Interests ``(B, K, Dh)`` (invalid ones zero) and their mask ``(B, K)``.

        Args:
            inputs: ``(B, L, Dl)`` zero-padded sequence (any L; cut or padded to M).
            seq_len: ``(B,)`` sequence lengths.
        """
        x = self.fit_length(inputs)
        seq_mask = sequence_mask(seq_len, self.max_seq_len)
        x = x * seq_mask.unsqueeze(-1).to(x.dtype)
        caps_mask = capsule_mask(seq_len, self.max_k, self.const_caps_num)
        interests = self.dynamic_routing(x, seq_mask, caps_mask, self.initial_logits(x))
        return interests * caps_mask.unsqueeze(-1).to(interests.dtype), caps_mask
