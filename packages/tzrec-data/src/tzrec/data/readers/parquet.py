"""``ParquetDataset``: streams row groups of parquet files."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tzrec.core.errors import DataError
from tzrec.data.readers.base import FILE_COL, ROW_COL, BaseDataset


class ParquetDataset(BaseDataset):
    """Parquet reader; shards split the files' row groups between ranks and workers.

    Memory is bounded by ``batch_size`` rows per worker (plus the shuffle buffer): row
    groups are read with ``ParquetFile.iter_batches``.
    """

    def _open(self, path: str) -> pq.ParquetFile:
        cache = self.__dict__.setdefault("_pf_cache", {})
        pf = cache.get(path)
        if pf is None:
            try:
                pf = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as err:
                raise DataError(f"{path}: not a readable parquet file ({err})") from None
            if len(cache) > 64:
                cache.clear()
            cache[path] = pf
        return pf

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_pf_cache", None)
        return state

    def _file_schema_names(self, path: str) -> list[str] | None:
        return self._open(path).schema_arrow.names

    def _schema(self) -> pa.Schema | None:
        for path in self.files:
            return self._open(path).schema_arrow
        return None

    def _units(self) -> list[tuple]:
        units = []
        for i, path in enumerate(self.files):
            pf = self._open(path)
            self._check_file_columns(path, pf.schema_arrow.names)
            start = 0
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if n:
                    units.append((i, rg, start))
                start += n
        return units

    def _read_unit(self, unit: tuple, columns: list[str]) -> Iterator[pa.RecordBatch]:
        fi, rg, start = unit
        pf = self._open(self.files[fi])
        row = start
        for rb in pf.iter_batches(
            batch_size=self.batch_size, row_groups=[rg], columns=columns, use_threads=False
        ):
            n = rb.num_rows
            yield rb.append_column(
                FILE_COL, pa.array(np.full(n, fi, dtype=np.int32))
            ).append_column(ROW_COL, pa.array(np.arange(row, row + n, dtype=np.int64)))
            row += n
