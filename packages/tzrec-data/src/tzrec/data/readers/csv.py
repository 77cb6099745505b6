"""``CsvDataset``: streams csv files block by block."""

from __future__ import annotations

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
        with open(path, encoding="utf-8", errors="replace") as f:
            line = f.readline()
        if not line.strip():
            return None
        read = pcsv.ReadOptions(block_size=_BLOCK_SIZE)
        parse = pcsv.ParseOptions(delimiter=self.data_config.delimiter or ",")
        try:
            with pcsv.open_csv(path, read_options=read, parse_options=parse) as r:
                return r.schema.names
        except pa.ArrowInvalid as err:
            raise DataError(f"{path}: cannot read csv header ({err})") from None

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
        row = 0
        try:
            reader = pcsv.open_csv(
                path, read_options=read, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                return
            raise DataError(f"{path}: cannot read csv ({err})") from None
        with reader:
            while True:
                try:
                    rb = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as err:
                    raise DataError(
                        f"{path}: malformed csv after row {row}: {_one_line(err)}"
                    ) from None
                n = rb.num_rows
                rb = rb.select(columns) if rb.schema.names != columns else rb
                yield rb.append_column(
                    FILE_COL, pa.array(np.full(n, fi, dtype=np.int32))
                ).append_column(ROW_COL, pa.array(np.arange(row, row + n, dtype=np.int64)))
                row += n


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
