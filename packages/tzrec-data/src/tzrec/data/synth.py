"""Synthetic data for any pipeline config: the columns and arrow types it reads, with a signal.

``tzrec synth-data`` writes train/eval files (and sampler tables) whose columns are exactly the
ones the config's features, labels, sample weights and negative sampler read, with values in
range of each feature, so a config can be tried end to end before real data exists.

Planted structure: every row belongs to one of ``clusters`` latent groups ``c``; ids are drawn
so that ``id % clusters == c`` for most values (items of a history come from the row's group,
as do its candidates), bucketized and dense values rise with ``c``, and labels depend on ``c``
(binary labels are positive mostly for the lower half of the groups). A model therefore beats
chance after a few steps, whatever its features are.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from tzrec.core.errors import ConfigError
from tzrec.data.features.base import SEQ_SEP, BaseFeature
from tzrec.data.features.id_feature import IdFeature
from tzrec.data.features.raw_feature import RawFeature
from tzrec.data.fg import synth_inputs as fg_synth

#: Unix seconds of the synthetic "now" (2023-11-14); request times fall in the 30 days after.
BASE_TIME = 1_700_000_000
_DAY = 86_400
_TIME_RE = re.compile(
    r"timestamp|(^|_)ts($|_)|(^|_)(request|query|event|action|click|create|update)_?time"
)
_ACTION_RE = re.compile(r"action(_?type)?(_?weight)?s?$|action_weight")
#: Fraction of ids drawn from the row's latent group (the rest are uniform noise).
_SIGNAL = 0.8
#: Fraction of binary labels flipped.
_LABEL_NOISE = 0.15
_SAMPLERS = (
    "negative_sampler",
    "negative_sampler_v2",
    "hard_negative_sampler",
    "hard_negative_sampler_v2",
)


@dataclass
class SynthOptions:
    """Sizes of the synthetic data."""

    rows: int = 1000
    eval_rows: int | None = None
    seed: int = 0
    clusters: int = 8
    max_id: int = 1000
    max_seq_len: int = 20
    sequence_format: str = "string"


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote: files by role and the config fields that point at them."""

    files: dict[str, str] = field(default_factory=dict)
    config_paths: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _is_time(name: str) -> bool:
    return bool(_TIME_RE.search(name.lower())) and "watch" not in name.lower()


def _is_action(name: str) -> bool:
    low = name.lower().split(SEQ_SEP)[-1]
    return bool(_ACTION_RE.search(low))


def _action_bits(config: Any) -> int:
    """Bits of an action bitmask: the widest task_bitmask or action_weights of the model."""
    from google.protobuf import text_format

    text = text_format.MessageToString(config.model_config)
    bits = 0
    for m in re.finditer(r"task_bitmask: (\d+)", text):
        bits = max(bits, int(m.group(1)).bit_length())
    for m in re.finditer(r"action_weights: (\d+)", text):
        bits = max(bits, int(m.group(1)).bit_length())
    return bits or 8


class _Gen:
    """Value generators shared by rows, sequences and sampler tables."""

    def __init__(self, opts: SynthOptions, rng: np.random.Generator, action_bits: int) -> None:
        self.opts = opts
        self.rng = rng
        self.k = opts.clusters
        self.action_bits = action_bits

    # -- ids -------------------------------------------------------------------------
    def id_range(self, f: IdFeature) -> int:
        """Distinct ids used for ``f``: its table size capped at ``max_id``."""
        cfg = f.config
        if cfg.HasField("zch"):
            return max(1, min(int(cfg.zch.zch_size), self.opts.max_id))
        if len(cfg.vocab_list) or len(cfg.vocab_dict):
            return len(self._vocab_keys(f))
        return max(1, min(f.num_embeddings, self.opts.max_id))

    @staticmethod
    def _vocab_keys(f: IdFeature) -> list[str]:
        cfg = f.config
        if len(cfg.vocab_list):
            return list(cfg.vocab_list)
        return sorted(cfg.vocab_dict.keys())

    def grouped(self, n_range: int, cluster: np.ndarray, noise: bool = True) -> np.ndarray:
        """Ints in ``[0, n_range)`` with ``v % clusters == cluster`` for most of them."""
        n = len(cluster)
        k = self.k
        if n_range < k:
            v = cluster % n_range
        else:
            v = self.rng.integers(0, n_range // k, n) * k + cluster
        if noise:
            flip = self.rng.random(n) >= _SIGNAL
            v = np.where(flip, self.rng.integers(0, n_range, n), v)
        return v.astype(np.int64)

    def keyed(self, n_range: int, key: np.ndarray, salt: int) -> np.ndarray:
        """A deterministic attribute of ``key`` in ``[0, n_range)`` keeping ``key``'s group."""
        k = self.k
        if n_range < k:
            return (key % k % n_range).astype(np.int64)
        mixed = (key // k) * 2654435761 + salt * 40503
        return ((mixed % (n_range // k)) * k + key % k).astype(np.int64)

    def id_values(self, f: IdFeature, ints: np.ndarray) -> pa.Array:
        """Encoded cells of id feature ``f`` for group-carrying ints."""
        cfg = f.config
        if len(cfg.vocab_list) or len(cfg.vocab_dict):
            keys = np.asarray(self._vocab_keys(f), dtype=object)
            return pa.array(keys[ints], pa.string())
        if cfg.HasField("zch"):
            # raw ids spread over int64 (managed collision maps them to zch_size rows)
            return pa.array(ints * 1_000_003 + 17, pa.int64())
        return pa.array(ints, pa.int64())

    # -- raw values ------------------------------------------------------------------
    def raw_values(self, f: RawFeature, cluster: np.ndarray, name: str) -> np.ndarray:
        """Float values of ``f`` (one per element; value_dim handled by the caller)."""
        n = len(cluster)
        bounds = np.asarray(list(f.config.boundaries), dtype=np.float64)
        if len(bounds):
            b = self.grouped(len(bounds) + 1, cluster)
            lo = np.concatenate([[bounds[0] - 1.0], bounds])
            hi = np.concatenate([bounds, [bounds[-1] + 1.0]])
            u = self.rng.uniform(0.1, 0.9, n)
            return lo[b] + (hi[b] - lo[b]) * u
        if "watch" in name.lower() or "duration" in name.lower():
            return np.round(cluster * 10.0 + self.rng.uniform(0, 30, n), 3)
        return np.round(cluster / self.k + self.rng.normal(0, 0.1, n) + 0.5, 4)

    def request_times(self, n: int) -> np.ndarray:
        """Unix seconds of each row's request, spread over 30 days after ``BASE_TIME``."""
        return BASE_TIME + self.rng.integers(0, 30 * _DAY, n)

    def history_times(self, req: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Ascending event times of each row's history, all before its request time."""
        rows = np.repeat(np.arange(len(lengths)), lengths)
        ts = req[rows] - 1 - self.rng.integers(0, 30 * _DAY, len(rows))
        order = np.lexsort((ts, rows))
        return ts[order]

    def actions(self, cluster: np.ndarray) -> np.ndarray:
        """Action bitmasks: the first bit (a click) mostly for the lower half of the groups."""
        n = len(cluster)
        bits = self.rng.integers(0, 1 << self.action_bits, n)
        click = (cluster < self.k / 2) ^ (self.rng.random(n) < _LABEL_NOISE)
        return np.where(click, bits | 1, bits & ~1).astype(np.int64)

    def binary(self, cluster: np.ndarray) -> np.ndarray:
        """0/1 labels: 1 mostly for the lower half of the groups."""
        pos = (cluster < self.k / 2) ^ (self.rng.random(len(cluster)) < _LABEL_NOISE)
        return pos.astype(np.int64)


def _join(
    values: pa.Array, lengths: np.ndarray, delim: str, fmt: str, multival_sep: str = "\x03"
) -> pa.Array:
    """A sequence column: per-row ``values`` (split by ``lengths``) as text or an arrow list."""
    off = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=off[1:])
    lists = pa.ListArray.from_arrays(pa.array(off), values)
    if fmt == "list":
        return lists
    if au_is_list(values.type):
        inner = pc.binary_join(values.cast(pa.list_(pa.string())), multival_sep)
        lists = pa.ListArray.from_arrays(pa.array(off), inner)
    else:
        lists = pa.ListArray.from_arrays(pa.array(off), values.cast(pa.string()))
    return pc.binary_join(lists, delim)


def au_is_list(t: pa.DataType) -> bool:
    """Whether ``t`` is an arrow list type."""
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _fixed_lists(values: np.ndarray, dim: int, t: pa.DataType) -> pa.Array:
    off = np.arange(0, len(values) + 1, dim, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(off), pa.array(values, t))


class _Synth:
    """Builds the tables of one config."""

    def __init__(self, config: Any, opts: SynthOptions) -> None:
        from tzrec.data.features.factory import create_features

        self.config = config
        self.opts = opts
        if opts.sequence_format not in ("string", "list"):
            raise ConfigError(
                f"synth-data: --sequence_format {opts.sequence_format!r}: expected string or list"
            )
        try:
            self.features = create_features(config.feature_configs, config.data_config)
        except ConfigError as err:
            raise ConfigError(f"synth-data cannot synthesise this config: {err}") from None
        dc = config.data_config
        self.multival_sep = (
            dc.fg_encoded_multival_sep if dc.HasField("fg_encoded_multival_sep") else "\x03"
        )
        self.columns: dict[str, BaseFeature] = {}
        for f in self.features:
            # the column the feature reads first: its name (FG_NONE) or the column its
            # expression names (FG_DAG / FG_NORMAL), as upstream
            col = f.input_names[0]
            other = self.columns.get(col)
            if other is not None and other.is_sequence != f.is_sequence:
                raise ConfigError(
                    f"synth-data: column '{col}' is read by '{other.name}' and '{f.name}', one "
                    "as a sequence and one not"
                )
            self.columns.setdefault(col, f)
        self.action_bits = _action_bits(config)
        #: item groups of each sequence's elements in the last table (sequence labels follow)
        self._seq_item_cluster: dict[str, np.ndarray] = {}
        self.sampler = self._sampler()
        for f in self.features:
            if isinstance(f, IdFeature):
                try:
                    f.num_embeddings  # noqa: B018  (raises a one-line ConfigError)
                except ConfigError as err:
                    raise ConfigError(f"synth-data cannot synthesise this config: {err}") from None

    def _sampler(self) -> tuple[str, Any] | None:
        dc = self.config.data_config
        name = dc.WhichOneof("sampler")
        if name is None:
            return None
        if name not in _SAMPLERS:
            raise ConfigError(
                f"synth-data: data_config.{name} is not supported (supported: "
                f"{', '.join(_SAMPLERS)})"
            )
        return name, getattr(dc, name)

    # -- sequences -------------------------------------------------------------------
    def _sequence_groups(self) -> dict[str, list[tuple[str, BaseFeature]]]:
        """Sequence columns by the group whose rows share lengths (a sequence_name or a column)."""
        groups: dict[str, list[tuple[str, BaseFeature]]] = {}
        # plain sequences of one feature group align item by item (as upstream's mock data)
        shared: dict[str, str] = {}
        for g in self.config.model_config.feature_groups:
            for name in g.feature_names:
                shared.setdefault(name, f"group:{g.group_name}")
        for col, f in self.columns.items():
            if f.is_sequence:
                key = f.sequence_name if f.is_grouped_sequence else shared.get(f.name, col)
                groups.setdefault(key, []).append((col, f))
        return groups

    def _seq_cap(self, f: BaseFeature) -> int:
        cap = self.opts.max_seq_len
        return max(1, min(f.sequence_length or cap, cap))

    # -- tables ----------------------------------------------------------------------
    def table(self, n: int, gen: _Gen) -> pa.Table:
        """One train or eval table of ``n`` rows."""
        cluster = gen.rng.integers(0, gen.k, n)
        req = gen.request_times(n)
        out: dict[str, pa.Array] = {}
        item_key = self._item_key_col()
        attr_cols = self._attr_cols()
        # single-valued features
        for col, f in self.columns.items():
            if f.is_sequence:
                continue
            if col in attr_cols and item_key in out and not self.columns[item_key].is_sequence:
                continue  # filled from the item key below
            if getattr(f, "fg_active", False):
                continue  # raw FG inputs: made below, from the columns made here
            out[col] = self._single(f, col, cluster, req, gen)
        for f in self.features:
            if getattr(f, "fg_active", False):
                fg_synth.fill(f, out, cluster, gen.rng)
        if item_key is not None and not self.columns[item_key].is_sequence:
            key = self._ints_of(item_key, out[item_key])
            for col in attr_cols:
                if col != item_key and col in self.columns:
                    out[col] = self._keyed_cells(self.columns[col], col, key, gen)
        # sequences: one length per group and row
        seq_lengths: dict[str, np.ndarray] = {}
        for key_name, members in self._sequence_groups().items():
            cap = min(self._seq_cap(f) for _, f in members)
            lengths = gen.rng.integers(1, cap + 1, n)
            seq_lengths[key_name] = lengths
            rows = np.repeat(np.arange(n), lengths)
            item_cluster = np.where(
                gen.rng.random(len(rows)) < _SIGNAL,
                cluster[rows],
                gen.rng.integers(0, gen.k, len(rows)),
            )
            hist_ts = None
            for col, f in members:
                if isinstance(f, IdFeature):
                    ints = gen.grouped(gen.id_range(f), item_cluster, noise=False)
                    values = gen.id_values(f, ints)
                    if f.value_dim > 1:
                        values = self._repeat_dim(values, f.value_dim)
                elif isinstance(f, RawFeature):
                    if _is_time(f.name):
                        if "query" in f.name.lower() or "request" in f.name.lower():
                            values = pa.array(req[rows], pa.int64())
                        else:
                            if hist_ts is None:
                                hist_ts = gen.history_times(req, lengths)
                            values = pa.array(hist_ts * (1000 if "ms" in f.name else 1))
                    elif _is_action(f.name):
                        values = pa.array(gen.actions(item_cluster), pa.int64())
                    else:
                        vals = gen.raw_values(f, item_cluster, f.name).astype(np.float32)
                        values = (
                            _fixed_lists(np.repeat(vals, f.value_dim), f.value_dim, pa.float32())
                            if f.value_dim > 1
                            else pa.array(vals, pa.float32())
                        )
                else:  # pragma: no cover - create_features builds only these two
                    raise ConfigError(f"synth-data: feature '{f.name}' has an unknown type")
                out[col] = _join(
                    values,
                    lengths,
                    f.sequence_delim or ";",
                    self.opts.sequence_format,
                    f.multival_sep,  # fg_encoded_multival_sep, or the FG separator
                )
            self._seq_item_cluster[key_name] = item_cluster
        # labels and weights
        for name in self.config.data_config.label_fields:
            if name in out:
                continue
            out[name] = self._label(name, cluster, seq_lengths, gen)
        for name in self.config.data_config.sample_weight_fields:
            if name not in out:
                out[name] = pa.array(gen.rng.uniform(0.5, 1.5, n).astype(np.float32))
        return pa.table(out)

    def _repeat_dim(self, values: pa.Array, dim: int) -> pa.Array:
        idx = np.repeat(np.arange(len(values)), dim)
        return _fixed_lists(
            values.take(pa.array(idx)).to_numpy(zero_copy_only=False), dim, values.type
        )

    def _single(
        self, f: BaseFeature, col: str, cluster: np.ndarray, req: np.ndarray, gen: _Gen
    ) -> pa.Array:
        if isinstance(f, IdFeature):
            ints = gen.grouped(gen.id_range(f), cluster)
            values = gen.id_values(f, ints)
            if f.is_weighted:
                w = np.round(gen.rng.uniform(0.5, 2.0, len(cluster)), 3).astype(str)
                return pc.binary_join_element_wise(values.cast(pa.string()), pa.array(w), ":")
            if f.value_dim > 1:
                return self._repeat_dim(values, f.value_dim)
            return values
        if _is_time(f.name):
            return pa.array(req * (1000 if "ms" in f.name else 1), pa.int64())
        vals = gen.raw_values(f, cluster, f.name).astype(np.float32)
        if f.value_dim > 1:
            noise = gen.rng.normal(0, 0.05, len(vals) * f.value_dim).astype(np.float32)
            return _fixed_lists(np.repeat(vals, f.value_dim) + noise, f.value_dim, pa.float32())
        return pa.array(vals, pa.float32())

    def _ints_of(self, col: str, arr: pa.Array) -> np.ndarray:
        f = self.columns[col]
        if isinstance(f, IdFeature) and f.config.HasField("zch"):
            return (arr.to_numpy(zero_copy_only=False) - 17) // 1_000_003
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)

    def _keyed_cells(self, f: BaseFeature, col: str, key: np.ndarray, gen: _Gen) -> pa.Array:
        """Item attribute cells derived from item ids (the same function as the item table)."""
        salt = zlib.crc32(col.encode()) % 9973
        if getattr(f, "fg_active", False):
            return fg_synth.keyed_text(key, salt)  # a raw FG input (a text): words of the key
        if isinstance(f, IdFeature):
            return gen.id_values(f, gen.keyed(gen.id_range(f), key, salt))
        vals = self._keyed_raw(f, key, salt)
        if f.value_dim > 1:
            return _fixed_lists(np.repeat(vals, f.value_dim), f.value_dim, pa.float32())
        return pa.array(vals, pa.float32())

    @staticmethod
    def _keyed_raw(f: BaseFeature, key: np.ndarray, salt: int) -> np.ndarray:
        bounds = np.asarray(list(f.config.boundaries), dtype=np.float64)
        frac = ((key * 2654435761 + salt) % 1000) / 1000.0 * 0.8 + 0.1
        if len(bounds):
            b = (key + salt) % (len(bounds) + 1)
            lo = np.concatenate([[bounds[0] - 1.0], bounds])
            hi = np.concatenate([bounds, [bounds[-1] + 1.0]])
            return (lo[b] + (hi[b] - lo[b]) * frac).astype(np.float32)
        return (frac + (key % 8) / 8.0).astype(np.float32)

    def _label(
        self, name: str, cluster: np.ndarray, seq_lengths: dict[str, np.ndarray], gen: _Gen
    ) -> pa.Array:
        seq = self._label_sequence(name, seq_lengths)
        regression = self._is_regression(name)
        if seq is not None:
            key_name, delim = seq
            lengths = seq_lengths[key_name]
            ic = self._seq_item_cluster[key_name]
            if regression or "time" in name.lower():
                vals = pa.array(np.round(ic * 10.0 + gen.rng.uniform(0, 30, len(ic)), 3))
            elif _is_action(name):
                vals = pa.array(gen.actions(ic))
            else:
                vals = pa.array(gen.binary(ic))
            return _join(vals, lengths, delim, self.opts.sequence_format)
        if regression:
            return pa.array((cluster + gen.rng.normal(0, 0.5, len(cluster))).astype(np.float32))
        if self.sampler is not None:
            return pa.array(np.ones(len(cluster), np.int64))  # retrieval: positive pairs
        num_class = self._num_class(name)
        if num_class > 2:
            noisy = gen.rng.random(len(cluster)) < _LABEL_NOISE
            vals = np.where(
                noisy, gen.rng.integers(0, num_class, len(cluster)), cluster % num_class
            )
            return pa.array(vals.astype(np.int64))
        return pa.array(gen.binary(cluster))

    def _label_sequence(
        self, name: str, seq_lengths: dict[str, np.ndarray]
    ) -> tuple[str, str] | None:
        """``(group, delim)`` when label ``name`` is a column of a sequence (``<seq>_x``)."""
        for key_name, members in self._sequence_groups().items():
            f = members[0][1]
            if not f.is_grouped_sequence:
                continue
            if name.startswith(key_name + "_"):
                return key_name, f.sequence_delim or ";"
        return None

    def _loss_texts(self, name: str) -> list[str]:
        from google.protobuf import text_format

        mc = self.config.model_config
        texts = []
        for desc, value in mc.ListFields():
            if desc.message_type is None:
                continue
            items = value if desc.is_repeated else [value]
            for item in items:
                for tdesc, tval in item.ListFields():
                    if tdesc.name == "task_configs" or tdesc.name.endswith("task_tower"):
                        for task in tval if tdesc.is_repeated else [tval]:
                            if getattr(task, "label_name", "") == name:
                                texts.append(text_format.MessageToString(task))
        if not texts:
            label_fields = list(self.config.data_config.label_fields)
            if label_fields and label_fields[0] == name:
                texts.append(text_format.MessageToString(mc))
        return texts

    def _is_regression(self, name: str) -> bool:
        return any(
            re.search(r"\b(l2_loss|l1_loss|huber|mean_squared|mse)\b", t) and "binary" not in t
            for t in self._loss_texts(name)
        )

    def _num_class(self, name: str) -> int:
        best = 0
        for t in self._loss_texts(name):
            for m in re.finditer(r"^num_class: (\d+)", t, re.M):
                best = max(best, int(m.group(1)))
        return best

    # -- sampler ---------------------------------------------------------------------
    def _item_key_col(self) -> str | None:
        if self.sampler is None:
            return None
        return self.sampler[1].item_id_field

    def _attr_cols(self) -> list[str]:
        """Row columns holding sampled item attributes (other than the item key)."""
        if self.sampler is None:
            return []
        return [a for a in self.sampler[1].attr_fields if a in self.columns]

    def _attr_feature(self, attr: str) -> tuple[str, BaseFeature] | None:
        """The feature a sampler attribute names: its column, else ``<cand_seq>__attr``."""
        if attr in self.columns:
            return attr, self.columns[attr]
        key = self._item_key_col() or ""
        key_f = self.columns.get(key)
        if key_f is not None and key_f.is_grouped_sequence:
            for sep in (SEQ_SEP, "_"):
                col = f"{key_f.sequence_name}{sep}{attr}"
                if col in self.columns:
                    return col, self.columns[col]
        return None

    def sampler_tables(self, out_dir: Path, gen: _Gen, result: SynthResult) -> None:
        """Item/user tables and edge files of the configured negative sampler."""
        if self.sampler is None:
            return
        name, cfg = self.sampler
        key_col = cfg.item_id_field
        key_f = self.columns.get(key_col)
        if not isinstance(key_f, IdFeature):
            raise ConfigError(
                f"synth-data: data_config.{name}.item_id_field '{key_col}' is not the column of "
                "an id feature"
            )
        n_items = gen.id_range(key_f)
        ids = np.arange(n_items, dtype=np.int64)
        attrs: list[str] = []
        item_columns: dict[str, pa.Array] = {}
        for a in cfg.attr_fields:
            found = self._attr_feature(a)
            if found is None:
                raise ConfigError(
                    f"synth-data: data_config.{name}.attr_fields '{a}' is not the column of a "
                    "feature"
                )
            col, f = found
            if col == key_col:
                cells = gen.id_values(f, ids)
            else:
                cells = self._keyed_cells(f, col, ids, gen)
            # one row per item, typed, under the attribute's bare name (export's item table)
            item_columns[a.split(SEQ_SEP, 1)[-1]] = cells
            if au_is_list(cells.type):
                cells = pc.binary_join(cells.cast(pa.list_(pa.string())), self.multival_sep)
            attrs.append(cells.cast(pa.string()))
        field_delim = cfg.field_delimiter or "\t"
        attr_delim = cfg.attr_delimiter
        weights = np.ones(n_items)
        item_path = out_dir / "sampler_items.txt"
        if attrs:
            if len(attrs) > 1 and attr_delim == field_delim:
                raise ConfigError(
                    f"synth-data: data_config.{name}.attr_delimiter equals its field delimiter "
                    f"({attr_delim!r}); a text item table cannot hold {len(attrs)} attributes"
                )
            feature = (
                attrs[0] if len(attrs) == 1 else pc.binary_join_element_wise(*attrs, attr_delim)
            )
        else:
            feature = None
        _write_text_table(
            item_path,
            {"id": ("int64", ids), "weight": ("float", weights)}
            | ({"feature": ("string", feature)} if feature is not None else {}),
            field_delim,
        )
        result.files["sampler items"] = str(item_path)
        if item_columns:
            table_path = out_dir / "items.parquet"
            pq.write_table(pa.table(item_columns), table_path)
            result.files["items (tzrec export --item_input_path)"] = str(table_path)
        path_field = "input_path" if name == "negative_sampler" else "item_input_path"
        result.config_paths[f"data_config.{name}.{path_field}"] = str(item_path)
        if name == "negative_sampler":
            return
        user_f = self.columns.get(cfg.user_id_field)
        if not isinstance(user_f, IdFeature):
            raise ConfigError(
                f"synth-data: data_config.{name}.user_id_field '{cfg.user_id_field}' is not the "
                "column of an id feature"
            )
        n_users = gen.id_range(user_f)
        users = np.arange(n_users, dtype=np.int64)
        user_path = out_dir / "sampler_users.txt"
        _write_text_table(
            user_path, {"id": ("int64", users), "weight": ("float", np.ones(n_users))}, field_delim
        )
        result.files["sampler users"] = str(user_path)
        result.config_paths[f"data_config.{name}.user_input_path"] = str(user_path)
        per_user = 4
        src = np.repeat(users, per_user)
        user_cluster = src % gen.k
        if cfg.DESCRIPTOR.fields_by_name.get("pos_edge_input_path") is not None:
            dst = gen.grouped(n_items, user_cluster, noise=False)
            path = out_dir / "sampler_pos_edges.txt"
            _write_text_table(
                path,
                {
                    "src_id": ("int64", src),
                    "dst_id": ("int64", dst),
                    "weight": ("float", np.ones(len(src))),
                },
                field_delim,
            )
            result.files["sampler positive edges"] = str(path)
            result.config_paths[f"data_config.{name}.pos_edge_input_path"] = str(path)
        if cfg.DESCRIPTOR.fields_by_name.get("hard_neg_edge_input_path") is not None:
            other = (user_cluster + gen.rng.integers(1, max(gen.k, 2), len(src))) % gen.k
            dst = gen.grouped(n_items, other, noise=False)
            path = out_dir / "sampler_hard_neg_edges.txt"
            _write_text_table(
                path,
                {
                    "src_id": ("int64", src),
                    "dst_id": ("int64", dst),
                    "weight": ("float", np.ones(len(src))),
                },
                field_delim,
            )
            result.files["sampler hard negative edges"] = str(path)
            result.config_paths[f"data_config.{name}.hard_neg_edge_input_path"] = str(path)


def _write_text_table(path: Path, columns: dict[str, tuple[str, Any]], delim: str) -> None:
    """A sampler text table: a ``name:type`` header, then one delimited line per row."""
    header = delim.join(f"{name}:{typ}" for name, (typ, _) in columns.items())
    cells = [
        pa.array(v).cast(pa.string()) if not isinstance(v, pa.Array) else v.cast(pa.string())
        for _, v in columns.values()
    ]
    lines = cells[0] if len(cells) == 1 else pc.binary_join_element_wise(*cells, delim)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(header + "\n")
        if len(lines):
            fh.write("\n".join(lines.to_pylist()) + "\n")


def _write_data(table: pa.Table, path: Path, config: Any) -> None:
    """Parquet, or csv for ``CsvDataset`` (column order and header from the data_config)."""
    from tzrec.protos import data_pb2

    dc = config.data_config
    if dc.dataset_type != data_pb2.CsvDataset:
        pq.write_table(table, path, row_group_size=max(1024, min(len(table), 65536)))
        return
    names = [f.input_name for f in dc.input_fields] or table.column_names
    cols = {}
    for name in names:
        if name in table.column_names:
            col = table.column(name)
            if au_is_list(col.type):
                raise ConfigError(
                    "synth-data: a csv dataset cannot hold list columns; use "
                    "--sequence_format string"
                )
            cols[name] = col
        else:
            cols[name] = pa.array(["0"] * len(table))
    missing = [c for c in table.column_names if c not in cols]
    if missing:
        raise ConfigError(
            f"synth-data: data_config.input_fields lacks the column(s) {missing} the config reads"
        )
    pcsv.write_csv(
        pa.table(cols),
        path,
        pcsv.WriteOptions(
            include_header=dc.with_header, delimiter=dc.delimiter or ",", quoting_style="none"
        ),
    )


def synthesize(config: Any, out_dir: str | Path, opts: SynthOptions | None = None) -> SynthResult:
    """Write synthetic train/eval data (and sampler tables) for ``config`` under ``out_dir``.

    Raises:
        ConfigError: one line naming what the config asks for that cannot be synthesised.
    """
    from tzrec.protos import data_pb2

    opts = opts or SynthOptions()
    if opts.rows < 1:
        raise ConfigError(f"synth-data: --rows must be >= 1, got {opts.rows}")
    synth = _Synth(config, opts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = _Gen(opts, np.random.default_rng(opts.seed), synth.action_bits)
    result = SynthResult()
    csv = config.data_config.dataset_type == data_pb2.CsvDataset
    ext = "csv" if csv else "parquet"
    eval_rows = opts.eval_rows if opts.eval_rows is not None else max(opts.rows // 4, 64)
    for role, n, field_name in (
        ("train", opts.rows, "train_input_path"),
        ("eval", eval_rows, "eval_input_path"),
    ):
        table = synth.table(n, gen)
        path = out / f"{role}.{ext}"
        _write_data(table, path, config)
        result.files[role] = str(path)
        result.config_paths[field_name] = str(path)
        if role == "train":
            result.columns = {
                name: str(t) for name, t in zip(table.column_names, table.schema.types, strict=True)
            }
    synth.sampler_tables(out, gen, result)
    if config.data_config.dataset_type not in (data_pb2.ParquetDataset, data_pb2.CsvDataset):
        kind = data_pb2.DatasetType.Name(config.data_config.dataset_type)
        result.notes.append(
            f"dataset_type {kind} reads no local files: add --edit_config_json "
            '\'{"data_config.dataset_type": "ParquetDataset"}\''
        )
    return result


def with_paths(config: Any, paths: dict[str, str]) -> Any:
    """A copy of ``config`` whose input paths are ``paths`` (dotted field -> value)."""
    out = type(config)()
    out.CopyFrom(config)
    for dotted, value in paths.items():
        msg = out
        *parents, last = dotted.split(".")
        for p in parents:
            msg = getattr(msg, p)
        setattr(msg, last, value)
    return out


# -- the command ---------------------------------------------------------------------------


__all__: list[str] = ["SynthOptions", "SynthResult", "synthesize", "with_paths"]
