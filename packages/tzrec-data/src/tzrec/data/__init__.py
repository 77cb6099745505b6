"""tzrec.data: features, parquet/csv readers, ``Batch`` and negative samplers.

The names below load on first use (PEP 562): importing ``tzrec.data.plugin`` (what the
plugin manager does for ``tzrec --help``) must not import torch or torchrec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "Batch": "tzrec.data.batch",
    "BASE_DATA_GROUP": "tzrec.data.features",
    "NEG_DATA_GROUP": "tzrec.data.features",
    "BaseFeature": "tzrec.data.features",
    "IdFeature": "tzrec.data.features",
    "RawFeature": "tzrec.data.features",
    "create_features": "tzrec.data.features",
    "project_grouped_sequence_feature_to_scalar": "tzrec.data.features",
    "DataParser": "tzrec.data.parser",
    "BaseDataset": "tzrec.data.readers",
    "CsvDataset": "tzrec.data.readers",
    "ParquetDataset": "tzrec.data.readers",
    "create_dataloader": "tzrec.data.readers",
    "combine_neg_as_candidate_sequence": "tzrec.data.samplers",
}

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

if TYPE_CHECKING:  # static analysers see the eager imports
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
    from tzrec.data.readers import BaseDataset, CsvDataset, ParquetDataset, create_dataloader
    from tzrec.data.samplers import combine_neg_as_candidate_sequence


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` on first access and cache the attribute."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tzrec.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
