"""``CsvDataset``: streams csv files block by block."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from tzrec.core.errors import DataError
from tzrec.data.readers.base import FILE_COL, ROW_COL, BaseDataset

_TYPES = {
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "STRING": pa.string(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
}
_BLOCK_SIZE = 4 << 20

logger = logging.getLogger(__name__)


class CsvDataset(BaseDataset):
    """Csv reader; shards split the files between ranks and workers.

    Column names come from the header (``with_header: true``) or from
    ``data_config.input_fields``. Columns are read as strings unless ``input_fields`` give
    a scalar type, so that multi-value and sequence cells keep their text.
    """

    def _column_names(self) -> list[str] | None:
        if self.data_config.with_header:
            return None
        names = [f.input_name for f in self.data_config.input_fields]
        if not names:
            raise DataError(f"{self.input_path}: csv without header needs data_config.input_fields")
        return names

    def _options(self, names: list[str] | None, header: list[str] | None, columns=None):
        from tzrec.protos import data_pb2

        read = pcsv.ReadOptions(column_names=names, block_size=_BLOCK_SIZE, use_threads=False)
        parse = pcsv.ParseOptions(
            delimiter=self.data_config.delimiter or ",", newlines_in_values=False
        )
        all_names = names or header or []
        types = {n: pa.string() for n in all_names}
        for f in self.data_config.input_fields:
            if f.HasField("input_type"):
                t = _TYPES.get(data_pb2.FieldType.Name(f.input_type))
                if t is not None and f.input_name in types:
                    types[f.input_name] = t
        convert = pcsv.ConvertOptions(
            column_types=types,
            include_columns=columns,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        return read, parse, convert

    def _header(self, path: str) -> list[str] | None:
        names = self._column_names()
        if names is not None:
            return names
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            line = f.readline()
        if not line.strip():
            return None
        # only the header line: a bad data row is reported with its row when it is read
        try:
            names = next(csv.reader([line], delimiter=self.data_config.delimiter or ","))
        except csv.Error as err:
            raise DataError(f"{path}: cannot read csv header ({err})") from None
        return [n.strip("\r\n") for n in names]

    def _file_schema_names(self, path: str) -> list[str] | None:
        import os

        if os.path.getsize(path) == 0:
            return None
        return self._header(path)

    def _units(self) -> list[tuple]:
        units = []
        for i, path in enumerate(self.files):
            names = self._file_schema_names(path)
            if names is None:
                continue
            self._check_file_columns(path, names)
            units.append((i,))
        return units

    def _read_unit(self, unit: tuple, columns: list[str]) -> Iterator[pa.RecordBatch]:
        (fi,) = unit
        path = self.files[fi]
        header = self._header(path)
        read, parse, convert = self._options(self._column_names(), header, columns)
        # line number (1-based, header included) -> 0-based data row of the file
        first_line = 1 if self._column_names() is not None else 2
        skipped: list[int] = []  # data rows the parser dropped (on_bad_row="skip")
        bad: list = []  # the invalid row that stopped the parser: (row, expected, got, text)

        def on_invalid(r) -> str:
            row = r.number - first_line if r.number is not None and r.number >= 0 else -1
            if self.on_bad_row == "skip":
                skipped.append(row)
                logger.warning(
                    "skipping malformed csv row: %s: row %d: expected %d columns, got %d",
                    path,
                    row,
                    r.expected_columns,
                    r.actual_columns,
                )
                self._add_stat(1, 1)
                return "skip"
            bad.append((row, r.expected_columns, r.actual_columns, r.text))
            return "error"

        parse.invalid_row_handler = on_invalid
        start = 0  # file row of the next row to yield
        try:
            reader = pcsv.open_csv(
                path, read_options=read, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                return
            raise self._csv_error(path, err, bad, start) from None
        with reader:
            while True:
                try:
                    rb = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as err:
                    raise self._csv_error(path, err, bad, start) from None
                n = rb.num_rows
                rb = rb.select(columns) if rb.schema.names != columns else rb
                rows = _kept_rows(start, n, skipped)
                yield rb.append_column(
                    FILE_COL, pa.array(np.full(n, fi, dtype=np.int32))
                ).append_column(ROW_COL, pa.array(rows))
                start = int(rows[-1]) + 1 if n else start

    @staticmethod
    def _csv_error(path: str, err: Exception, bad: list, start: int) -> DataError:
        """One line naming the file and the data row the csv parser stopped at."""
        if bad:
            row, expected, got, text = bad[-1]
            where = f"row {row}" if row >= 0 else "a row"
            return DataError(
                f"{path}: {where}: expected {expected} columns, got {got} "
                f"({_one_line(text)[:80]!r})"
            )
        return DataError(f"{path}: malformed csv at or after row {start}: {_one_line(err)}")


def _kept_rows(start: int, n: int, skipped: list[int]) -> np.ndarray:
    """File rows of the next ``n`` rows from ``start`` that the parser did not skip."""
    rows = np.arange(start, start + n + len(skipped), dtype=np.int64)
    if skipped:
        rows = rows[~np.isin(rows, np.asarray(skipped, dtype=np.int64))]
    return rows[:n]


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
