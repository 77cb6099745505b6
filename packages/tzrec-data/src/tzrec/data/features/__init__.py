"""Features: configured inputs that parse arrow columns into ids or dense values."""

from tzrec.data.features.base import (
    BASE_DATA_GROUP,
    NEG_DATA_GROUP,
    BaseFeature,
    DenseData,
    SequenceDenseData,
    SequenceSparseData,
    SparseData,
)
from tzrec.data.features.factory import (
    create_features,
    project_grouped_sequence_feature_to_scalar,
)
from tzrec.data.features.id_feature import IdFeature
from tzrec.data.features.raw_feature import RawFeature

__all__ = [
    "BASE_DATA_GROUP",
    "NEG_DATA_GROUP",
    "BaseFeature",
    "DenseData",
    "IdFeature",
    "RawFeature",
    "SequenceDenseData",
    "SequenceSparseData",
    "SparseData",
    "create_features",
    "project_grouped_sequence_feature_to_scalar",
]
