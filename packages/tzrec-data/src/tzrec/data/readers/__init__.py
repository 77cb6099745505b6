"""Readers: parquet and csv datasets that stream ``Batch`` objects."""

from tzrec.data.readers.base import (
    BaseDataset,
    create_dataloader,
    expand_input_path,
    get_rank_world,
)
from tzrec.data.readers.csv import CsvDataset
from tzrec.data.readers.parquet import ParquetDataset

__all__ = [
    "BaseDataset",
    "CsvDataset",
    "ParquetDataset",
    "create_dataloader",
    "expand_input_path",
    "get_rank_world",
]
