"""Native negative samplers (numpy / pyarrow) and how their negatives join a batch."""

from tzrec.data.samplers.base import HARD_NEG_INDICES, BaseSampler, build_sampler_input
from tzrec.data.samplers.candidates import CAND_POS_LENGTHS, combine_neg_as_candidate_sequence
from tzrec.data.samplers.join import NegativeJoin, build_negative_join
from tzrec.data.samplers.negative import (
    HardNegativeSampler,
    HardNegativeSamplerV2,
    NegativeSampler,
    NegativeSamplerV2,
)

__all__ = [
    "CAND_POS_LENGTHS",
    "HARD_NEG_INDICES",
    "BaseSampler",
    "HardNegativeSampler",
    "HardNegativeSamplerV2",
    "NegativeJoin",
    "NegativeSampler",
    "NegativeSamplerV2",
    "build_negative_join",
    "build_sampler_input",
    "combine_neg_as_candidate_sequence",
]
