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
    groups are read with ``ParquetFile.iter_batches``. Files are memory-mapped (no copy of
    the compressed pages into fresh buffers); set ``memory_map = False`` on the class or
    instance for file systems where mapping is undesirable.
    """

    #: Open files with ``memory_map=True``.
    memory_map = True

    def _open(self, path: str) -> pq.ParquetFile:
        cache = self.__dict__.setdefault("_pf_cache", {})
        pf = cache.get(path)
        if pf is None:
            try:
                pf = pq.ParquetFile(path, memory_map=self.memory_map)
            except (pa.ArrowException, OSError) as err:
                raise DataError(
                    f"{path}: not a readable parquet file ({' '.join(str(err).split())})"
                ) from None
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

    def _unit_rows(self, units: list[tuple]) -> list[int] | None:
        """Rows of each row group, from the file metadata."""
        return [self._open(self.files[u[0]]).metadata.row_group(u[1]).num_rows for u in units]

    def _read_unit(self, unit: tuple, columns: list[str]) -> Iterator[pa.RecordBatch]:
        return self._read_run(unit[0], [unit], columns)

    def _read_units(self, units: list[tuple], columns: list[str]) -> Iterator[pa.RecordBatch]:
        """Adjacent units of one file are read by one ``iter_batches`` call.

        Its record batches span row-group boundaries, so they stay ``batch_size`` rows and
        the rebatching passes them through without concatenating and copying.
        """
        run: list[tuple] = []
        for unit in units:
            if run and unit[0] != run[0][0]:
                yield from self._read_run(run[0][0], run, columns)
                run = []
            run.append(unit)
        if run:
            yield from self._read_run(run[0][0], run, columns)

    def _read_run(self, fi: int, run: list[tuple], columns: list[str]) -> Iterator[pa.RecordBatch]:
        pf = self._open(self.files[fi])
        meta = pf.metadata
        # file row of the first row of each unit, and where the unit starts in the stream
        file_start = np.array([u[2] for u in run], dtype=np.int64)
        counts = np.array([meta.row_group(u[1]).num_rows for u in run], dtype=np.int64)
        stream_start = np.zeros(len(run) + 1, dtype=np.int64)
        np.cumsum(counts, out=stream_start[1:])
        pos = 0
        batches = pf.iter_batches(
            batch_size=self.batch_size,
            row_groups=[u[1] for u in run],
            columns=columns,
            use_threads=False,
        )
        while True:
            try:
                rb = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as err:
                # e.g. "Corrupt snappy compressed data.": name the file and where
                k = min(int(np.searchsorted(stream_start, pos, side="right")) - 1, len(run) - 1)
                raise DataError(
                    f"{self.files[fi]}: corrupt parquet data in row group {run[k][1]} (after "
                    f"file row {int(file_start[k] + pos - stream_start[k])}): "
                    f"{' '.join(str(err).split())}"
                ) from None
            n = rb.num_rows
            yield rb.append_column(
                FILE_COL, pa.array(np.full(n, fi, dtype=np.int32))
            ).append_column(ROW_COL, pa.array(_file_rows(pos, n, file_start, stream_start)))
            pos += n


def _file_rows(pos: int, n: int, file_start: np.ndarray, stream_start: np.ndarray) -> np.ndarray:
    """File row numbers of stream rows ``[pos, pos + n)`` of a run of row groups."""
    k = int(np.searchsorted(stream_start, pos, side="right")) - 1
    if pos + n <= stream_start[k + 1]:  # within one row group (the common case)
        first = file_start[k] + pos - stream_start[k]
        return np.arange(first, first + n, dtype=np.int64)
    stream_rows = np.arange(pos, pos + n, dtype=np.int64)
    unit = np.searchsorted(stream_start, stream_rows, side="right") - 1
    return file_start[unit] + stream_rows - stream_start[unit]
