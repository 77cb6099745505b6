"""tzrec.data: features, parquet/csv readers, ``Batch`` and negative samplers."""

from tzrec.data.batch import Batch
from tzrec.data.features import (
    BASE_DATA_GROUP,
    NEG_DATA_GROUP,
    BaseFeature,
    IdFeature,
    RawFeature,
    create_features,
    project_grouped_sequence_feature_to_scalar,
)
from tzrec.data.parser import DataParser
from tzrec.data.readers import (
    BaseDataset,
    CsvDataset,
    ParquetDataset,
    create_dataloader,
)
from tzrec.data.samplers import combine_neg_as_candidate_sequence

__all__ = [
    "BASE_DATA_GROUP",
    "NEG_DATA_GROUP",
    "BaseDataset",
    "BaseFeature",
    "Batch",
    "CsvDataset",
    "DataParser",
    "IdFeature",
    "ParquetDataset",
    "RawFeature",
    "combine_neg_as_candidate_sequence",
    "create_dataloader",
    "create_features",
    "project_grouped_sequence_feature_to_scalar",
]
