"""Native negative samplers (numpy / pyarrow), registered under their config names."""

from tzrec.data.samplers.base import HARD_NEG_INDICES, BaseSampler, build_sampler_input
from tzrec.data.samplers.negative import (
    HardNegativeSampler,
    HardNegativeSamplerV2,
    NegativeSampler,
    NegativeSamplerV2,
)

__all__ = [
    "HARD_NEG_INDICES",
    "BaseSampler",
    "HardNegativeSampler",
    "HardNegativeSamplerV2",
    "NegativeSampler",
    "NegativeSamplerV2",
    "build_sampler_input",
]
