"""Streaming, sharded, shuffling dataset shared by the parquet and csv readers."""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import arrow_utils as au
from tzrec.data.batch import Batch
from tzrec.data.features.base import BaseFeature
from tzrec.data.io import expand_input_path, get_rank_world
from tzrec.data.parser import DataParser
from tzrec.data.samplers.join import NegativeJoin, build_negative_join

logger = logging.getLogger(__name__)

_FORCE_BASE_LOGGED = False


def check_force_base_data_group(negatives: NegativeJoin | None) -> None:
    """Honour ``data_config.force_base_data_group`` (upstream pads every group to one size).

    Upstream zero-pads the features of the batch rows to the input's largest row count.
    Without a sampler, or with negatives joined into candidate sequences, every data group
    already has the batch's rows, so that padding is a no-op and results are identical:
    tzrec accepts it and logs so once. With negatives appended as ``__NEG__`` rows the
    padding would make the padded rows users (changing every loss), so it is refused.
    """
    global _FORCE_BASE_LOGGED
    if negatives is not None and negatives.candidate is None:
        raise ConfigError(
            "data_config.force_base_data_group: not supported with a sampler whose negatives "
            "are appended as rows (item_id_field is not a candidate sequence); upstream pads "
            "the user side to the negatives' row count, which scores padding as users; unset it"
        )
    if not _FORCE_BASE_LOGGED:
        _FORCE_BASE_LOGGED = True
        logger.info(
            "data_config.force_base_data_group: tzrec's data groups keep their own row "
            "counts, here all equal to the batch's, so results are identical to upstream's"
        )


FILE_COL = "__tzrec_file__"
ROW_COL = "__tzrec_row__"
ALL_COLUMNS = "ALL_COLUMNS"
BAD_ROW_POLICIES = ("error", "skip")
#: Environment variable that sets the bad-row policy when the constructor does not.
BAD_ROWS_ENV = "TZREC_DATA_BAD_ROWS"


class BaseDataset(IterableDataset):
    """Reads files as a stream of :class:`Batch` objects.

    Args:
        data_config: the ``DataConfig``.
        features: features from :func:`tzrec.data.create_features`.
        input_path: comma-separated files, globs or directories.
        mode: ``"train"`` (shuffle if configured, sampler's ``num_sample``), ``"eval"``
            (deterministic, ``num_eval_sample``) or ``"predict"`` (no labels, no sampler).
        reserved_columns: columns copied into ``Batch.reserves`` (``["ALL_COLUMNS"]``: all).
        on_bad_row: ``"error"`` (default; or env ``TZREC_DATA_BAD_ROWS``) raises DataError
            naming file and row; ``"skip"`` drops malformed rows and counts them.
        rank: this process's rank (default: torch.distributed, else env ``RANK``).
        world_size: number of ranks (default: torch.distributed, else ``WORLD_SIZE``).
        batch_size: overrides ``batch_size`` / ``eval_batch_size``.
        seed: seed of shuffling and sampling.
    """

    def __init__(
        self,
        data_config: Any,
        features: list[BaseFeature],
        input_path: str,
        mode: str = "train",
        reserved_columns: list[str] | None = None,
        on_bad_row: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("train", "eval", "predict"):
            raise ConfigError(f"dataset mode must be train, eval or predict, got {mode!r}")
        on_bad_row = on_bad_row or os.environ.get(BAD_ROWS_ENV, "error")
        if on_bad_row not in BAD_ROW_POLICIES:
            raise ConfigError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
        self.data_config = data_config
        self.features = [copy.copy(f) for f in features]
        self.input_path = input_path
        self.mode = mode
        self.is_training = mode == "train"
        self.on_bad_row = on_bad_row
        if rank is None or world_size is None:
            r, w = get_rank_world()
            rank = r if rank is None else rank
            world_size = w if world_size is None else world_size
        self.rank, self.world_size = rank, world_size
        if batch_size is None:
            batch_size = data_config.batch_size
            if not self.is_training and data_config.HasField("eval_batch_size"):
                batch_size = data_config.eval_batch_size
        self.batch_size = int(batch_size)
        self.seed = seed
        self.shuffle = self.is_training and data_config.shuffle
        self.drop_remainder = bool(data_config.drop_remainder)
        self.label_fields = [] if mode == "predict" else list(data_config.label_fields)
        self.sample_weight_fields = (
            [] if mode == "predict" else list(data_config.sample_weight_fields)
        )
        self.reserved_columns = list(reserved_columns or [])
        self.files = expand_input_path(input_path)
        self._epoch = 0
        self._stats = mp.Array("q", 3, lock=True)  # rows read, rows skipped, batches
        self._schema_names = self._first_schema_names()
        self._resolve_features()
        self._init_sampler()
        self._parser = DataParser(
            self.features, self.label_fields, self.sample_weight_fields, self.reserved_columns
        )
        # NaN/inf values per input column (features, labels, weights), summed over workers
        self._nonfinite_columns: list[str] = []
        for c in (
            [f.input_name for f in self.features] + self.label_fields + (self.sample_weight_fields)
        ):
            if c not in self._nonfinite_columns:
                self._nonfinite_columns.append(c)
        self._nonfinite = mp.Array("q", max(len(self._nonfinite_columns), 1), lock=True)
        self._nonfinite_warned: set[str] = set()
        self._pass_nonfinite: dict[str, int] = {}

    @classmethod
    def create_features(cls, feature_configs: Any, data_config: Any) -> list[BaseFeature]:
        """Features for this reader (lets the model-agnostic engine build them by plugin)."""
        from tzrec.data.features import create_features

        return create_features(feature_configs, data_config)

    def make_dataloader(self, pin_memory: bool | None = None) -> DataLoader:
        """A DataLoader over this dataset (see :func:`create_dataloader`)."""
        return create_dataloader(self, pin_memory)

    # ---- to be provided by readers -----------------------------------------------------
    def _file_schema_names(self, path: str) -> list[str] | None:
        """Column names of a file, ``None`` for an empty file without a schema."""
        raise NotImplementedError

    def _units(self) -> list[tuple]:
        """Work units ``(file_index, part)`` that shards split between them."""
        raise NotImplementedError

    def _read_unit(self, unit: tuple, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """Record batches of one unit with ``__tzrec_file__`` / ``__tzrec_row__`` columns."""
        raise NotImplementedError

    def _read_units(self, units: list[tuple], columns: list[str]) -> Iterator[pa.RecordBatch]:
        """Record batches of several units in order (readers may merge adjacent units)."""
        for unit in units:
            yield from self._read_unit(unit, columns)

    # ---- setup -------------------------------------------------------------------------
    def _first_schema_names(self) -> list[str] | None:
        for path in self.files:
            names = self._file_schema_names(path)
            if names is not None:
                return names
        return None

    def _resolve_features(self) -> None:
        names = self._schema_names
        if self.reserved_columns[:1] == [ALL_COLUMNS]:
            self.reserved_columns = [n for n in (names or [])]
        if names is None:
            return
        cols = set(names)
        for f in self.features:
            try:
                resolved = f.resolve_input(cols)
            except DataError as err:  # an FG feature naming its missing expression column
                raise DataError(f"{self.files[0]}: {err}") from None
            if resolved is None:
                raise DataError(
                    f"{self.files[0]}: column '{f.input_names[0]}' is missing, wanted by "
                    f"feature '{f.name}'"
                    + (
                        f" (also tried {', '.join(f.input_names[1:])})"
                        if len(f.input_names) > 1
                        else ""
                    )
                )
        for kind, fields in (
            ("label", self.label_fields),
            ("sample weight", self.sample_weight_fields),
            ("reserved", self.reserved_columns),
        ):
            for c in fields:
                if c not in cols:
                    raise DataError(f"{self.files[0]}: {kind} column '{c}' is missing")

    def _needed_columns(self) -> list[str]:
        cols: list[str] = []
        for c in (
            [c for f in self.features for c in getattr(f, "input_columns", [f.input_name])]
            + self.label_fields
            + self.sample_weight_fields
            + self.reserved_columns
            + self._sampler_columns
        ):
            if c not in cols:
                cols.append(c)
        return cols

    def _check_file_columns(self, path: str, names: list[str]) -> None:
        have = set(names)
        for f in self.features:
            for c in getattr(f, "input_columns", [f.input_name]):
                if c not in have:
                    raise DataError(
                        f"{path}: column '{c}' is missing, wanted by feature '{f.name}'"
                    )
        for c in self.label_fields + self.sample_weight_fields + self.reserved_columns:
            if c not in have:
                raise DataError(f"{path}: column '{c}' is missing (label/weight/reserved)")

    def _init_sampler(self) -> None:
        self._negatives: NegativeJoin | None = None
        if self.mode != "predict":
            self._negatives = build_negative_join(
                self.data_config,
                self.features,
                self._schema_names,
                self._schema(),
                self.batch_size,
                self.is_training,
            )
        self._sampler_columns = self._negatives.columns if self._negatives else []
        if getattr(self.data_config, "force_base_data_group", False):
            check_force_base_data_group(self._negatives)

    def _schema(self) -> pa.Schema | None:
        return None

    # ---- iteration ---------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (reseeds the file order and the shuffle buffer)."""
        self._epoch = epoch

    @property
    def summary(self) -> dict[str, Any]:
        """Run counters summed over workers: rows_read, rows_skipped, batches.

        ``nonfinite_values`` maps each input column with NaN/inf values to their count.
        """
        return {
            "rows_read": int(self._stats[0]),
            "rows_skipped": int(self._stats[1]),
            "batches": int(self._stats[2]),
            "nonfinite_values": {
                c: int(self._nonfinite[i])
                for i, c in enumerate(self._nonfinite_columns)
                if self._nonfinite[i]
            },
        }

    def _note_nonfinite(self, table: pa.Table, num_rows: int) -> None:
        """Count the last batch's NaN/inf values per column; warn once per column."""
        for column, rows in self._parser.nonfinite.items():
            n = len(rows)
            i = self._nonfinite_columns.index(column)
            with self._nonfinite.get_lock():
                self._nonfinite[i] += n
            self._pass_nonfinite[column] = self._pass_nonfinite.get(column, 0) + n
            if column in self._nonfinite_warned:
                continue
            self._nonfinite_warned.add(column)
            first = int(rows.min())
            if first < num_rows:
                fi = int(table.column(FILE_COL)[first].as_py())
                where = f"{self.files[fi]}: row {int(table.column(ROW_COL)[first].as_py())}"
            else:
                where = "a sampled negative"
            logger.warning(
                "column '%s': %d NaN/inf value(s) in a batch, first at %s; they are read as "
                "they are and counted (dataset summary 'nonfinite_values')",
                column,
                n,
                where,
            )

    def _add_stat(self, i: int, n: int) -> None:
        with self._stats.get_lock():
            self._stats[i] += n

    def _shard(self) -> tuple[int, int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * nw + wid, self.world_size * nw, wid

    def __iter__(self) -> Iterator[Batch]:
        shard, num_shards, wid = self._shard()
        epoch = self._epoch
        self._epoch += 1
        units = self._units()
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(units))
            units = [units[i] for i in order]
        stripe: tuple[int, int] | None = None
        if 0 < len(units) < num_shards:
            # Fewer files/row groups than shards: every shard reads all of them and keeps
            # its slice of each record batch, so no rank or worker is left without data.
            my_units, stripe = units, (shard, num_shards)
        else:
            my_units = units[shard::num_shards]
        rng = np.random.default_rng([self.seed, epoch, shard])
        if self._negatives is not None:
            self._negatives.set_seed(int(rng.integers(1 << 62)))
        columns = self._needed_columns()
        if self.mode == "eval" and self.world_size > 1:
            # every row exactly once, every rank the same number of batches (ranks step
            # together, so a rank running out early would stop the others)
            tables = self._eval_share(units, columns)
        else:
            stream = self._stream(my_units, columns, stripe)
            if self.shuffle:
                stream = self._shuffle_buffer(stream, rng)
            tables = self._rebatch(stream)
        self._pass_nonfinite = {}
        for table in tables:
            batch = self._to_batch(table)
            if batch is not None:
                self._add_stat(2, 1)
                yield batch
        if self._pass_nonfinite:
            logger.warning(
                "NaN/inf values read in this pass (shard %d of %d): %s",
                shard,
                num_shards,
                ", ".join(f"'{c}': {n}" for c, n in self._pass_nonfinite.items()),
            )

    def _unit_rows(self, units: list[tuple]) -> list[int] | None:
        """Rows of each unit, known before reading (``None``: this reader cannot tell)."""
        return None

    def num_batches(self) -> int | None:
        """Batches one pass yields on this rank, from row counts known up front.

        An estimate for progress bars (bad rows dropped and per-worker remainders are not
        foreseen); ``None`` when the reader cannot count rows before reading (csv).
        """
        units = self._units()
        rows = self._unit_rows(units)
        if rows is None:
            return None
        if self.mode == "eval" and self.world_size > 1:
            return self._eval_plan(rows)[1]
        per_rank = -(-int(sum(rows)) // max(self.world_size, 1))
        full, rest = divmod(per_rank, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def _eval_plan(self, rows: list[int] | None) -> tuple[list[int], int]:
        """Split all evaluation rows into ``world_size * k`` batches, ``k`` per rank.

        ``k = ceil(rows / (world_size * batch_size))`` batches per rank, the rows spread
        evenly over them (at most ``batch_size`` each): every rank evaluates the same
        number of batches and together they read every row once.

        Raises:
            DataError: the reader cannot count rows up front, or there are fewer rows than
                ranks (a rank would evaluate nothing).
        """
        world = self.world_size
        if rows is None:
            raise DataError(
                f"{self.input_path}: evaluation with {world} processes needs row counts up "
                f"front, which {type(self).__name__} does not have; convert the data to "
                "parquet or evaluate with one process"
            )
        total = int(sum(rows))
        if total < world:
            raise DataError(
                f"{self.input_path}: {total} rows to evaluate cannot give each of the {world} "
                f"ranks (world size {world}) data; evaluate with at most {max(total, 1)} "
                "process(es)"
            )
        k = max(1, min(-(-total // (world * self.batch_size)), total // world))
        batches = world * k
        base, extra = divmod(total, batches)
        sizes = [base + 1] * extra + [base] * (batches - extra)
        return sizes, k

    def _eval_share(self, units: list[tuple], columns: list[str]) -> Iterator[pa.Table]:
        """This rank's (and worker's) evaluation batches: a contiguous range of rows."""
        rows = self._unit_rows(units)
        sizes, k = self._eval_plan(rows)
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        # this rank's batches, split into contiguous blocks for its DataLoader workers
        first = self.rank * k + (k * wid) // nw
        last = self.rank * k + (k * (wid + 1)) // nw
        mine = sizes[first:last]
        if not mine:
            return
        begin = int(sum(sizes[:first]))
        end = begin + int(sum(mine))
        starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        picked = [
            (u, int(starts[i]))
            for i, u in enumerate(units)
            if starts[i] < end and starts[i + 1] > begin
        ]
        pos = picked[0][1] if picked else begin
        pending: list[pa.Table] = []
        have = 0
        todo = list(mine)
        for rb in self._read_units([u for u, _ in picked], columns):
            n = rb.num_rows
            lo, hi = max(begin - pos, 0), min(end - pos, n)
            pos += n
            if hi <= lo:
                continue
            piece = pa.Table.from_batches([rb.slice(lo, hi - lo)])
            self._add_stat(0, piece.num_rows)
            pending.append(piece)
            have += piece.num_rows
            while todo and have >= todo[0]:
                table = pa.concat_tables(pending)
                yield table.slice(0, todo[0])
                rest = table.slice(todo[0])
                have -= todo.pop(0)
                pending = [rest] if rest.num_rows else []
            if pos >= end:
                break
        if todo:
            raise DataError(
                f"{self.input_path}: the files hold fewer rows than their metadata says "
                f"(rank {self.rank} of {self.world_size} is {sum(todo)} rows short)"
            )

    def _stream(
        self, units: list[tuple], columns: list[str], stripe: tuple[int, int] | None = None
    ) -> Iterator[pa.Table]:
        for rb in self._read_units(units, columns):
            if stripe is not None:
                # each shard keeps its contiguous slice of every record batch: shares differ
                # by at most one row per record batch, and no shard is left without rows
                n, (k, of) = rb.num_rows, stripe
                rb = rb.slice(n * k // of, n * (k + 1) // of - n * k // of)
            if rb.num_rows:
                self._add_stat(0, rb.num_rows)
                yield pa.Table.from_batches([rb])

    def _shuffle_buffer(self, stream: Iterator[pa.Table], rng) -> Iterator[pa.Table]:
        cap = max(1, int(self.data_config.shuffle_buffer_size)) * self.batch_size
        buf: list[pa.Table] = []
        n = 0
        for t in stream:
            buf.append(t)
            n += t.num_rows
            if n >= cap:
                table = pa.concat_tables(buf).combine_chunks()
                table = table.take(pa.array(rng.permutation(table.num_rows)))
                half = max(table.num_rows // 2, min(self.batch_size, table.num_rows))
                yield table.slice(0, half)
                rest = table.slice(half)
                buf, n = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if n:
            table = pa.concat_tables(buf).combine_chunks()
            yield table.take(pa.array(rng.permutation(table.num_rows)))

    def _rebatch(self, stream: Iterator[pa.Table]) -> Iterator[pa.Table]:
        bs = self.batch_size
        buf: list[pa.Table] = []
        n = 0
        for t in stream:
            if n == 0 and t.num_rows == bs:
                yield t
                continue
            buf.append(t)
            n += t.num_rows
            while n >= bs:
                table = pa.concat_tables(buf)
                yield table.slice(0, bs)
                rest = table.slice(bs)
                buf, n = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if n and not self.drop_remainder:
            yield pa.concat_tables(buf)

    # ---- one batch -------------------------------------------------------------------
    def _to_batch(self, table: pa.Table) -> Batch | None:
        while True:
            if table.num_rows == 0:
                return None
            try:
                return self._parse_table(table)
            except au.BadType as bad:
                files = table.column(FILE_COL).to_numpy()
                raise DataError(
                    f"{self.files[int(files[0])]}: column '{bad.column}' ({bad.feature}): "
                    f"{bad.reason}"
                ) from None
            except au.BadRows as bad:
                rows = bad.rows[bad.rows < table.num_rows]
                if len(rows) == 0:
                    raise DataError(
                        f"sampled negatives: column '{bad.column}' ({bad.feature}): {bad.reason}"
                    ) from None
                files = table.column(FILE_COL).to_numpy()
                file_rows = table.column(ROW_COL).to_numpy()
                first = int(rows[0])
                where = f"{self.files[int(files[first])]}: row {int(file_rows[first])}"
                if self.on_bad_row == "error":
                    more = (
                        f" (and {len(rows) - 1} more rows in this batch)" if len(rows) > 1 else ""
                    )
                    raise DataError(
                        f"{where}: column '{bad.column}' (feature '{bad.feature}'): "
                        f"{bad.reason}{more}"
                    ) from None
                logger.warning(
                    "skipping %d malformed row(s), first at %s: column '%s' (feature '%s'): %s",
                    len(rows),
                    where,
                    bad.column,
                    bad.feature,
                    bad.reason,
                )
                self._add_stat(1, len(rows))
                keep = np.ones(table.num_rows, dtype=bool)
                keep[rows] = False
                table = table.filter(pa.array(keep))

    def _parse_table(self, table: pa.Table) -> Batch:
        num_rows = table.num_rows
        columns = {name: au.combine(table.column(name)) for name in table.column_names}
        infos = {}
        if self._negatives is not None:
            infos = self._negatives.apply(columns)
            if self._negatives.expands_rows:  # TDM: ancestors and negatives are whole rows
                num_rows = len(columns[FILE_COL])
        batch = self._parser.parse(columns, num_rows)
        batch.additional_infos.update(infos)
        if self._parser.nonfinite:
            self._note_nonfinite(table, num_rows)
        return batch


def create_dataloader(dataset: BaseDataset, pin_memory: bool | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` with ``data_config.num_workers`` workers.

    Batches are built inside the workers; ``batch_size=None`` passes them through.
    """
    if pin_memory is None:
        pin_memory = bool(dataset.data_config.pin_memory) and torch.cuda.is_available()
    nw = int(dataset.data_config.num_workers)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=nw,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if nw > 0 else None,
        in_order=bool(getattr(dataset.data_config, "in_order", True)),
    )


__all__ = [
    "BaseDataset",
    "check_force_base_data_group",
    "create_dataloader",
    "expand_input_path",
    "get_rank_world",
]
