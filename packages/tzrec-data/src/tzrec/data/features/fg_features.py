"""Feature-generation (FG) features computed from raw input columns.

combo, lookup, match, expr, overlap, kv_dot_product, bool_mask, custom (EditDistance) and
tokenize features.

In ``FG_DAG`` / ``FG_NORMAL`` each feature reads the columns its expressions name
(``user:x`` / ``item:x`` / ``context:x`` read column ``x``; ``feature:f`` reads the output of
feature ``f``; ``const:v`` is the constant ``v``), computes upstream's FG output with the
vectorised operators of :mod:`tzrec.data.fg.ops`, and bucketizes it exactly as an
``id_feature`` (hash_bucket_size / num_buckets / vocab_*) or a ``raw_feature`` (boundaries,
normalizer, value_dim) of the same fields would. In ``FG_NONE`` it reads the fg-encoded column
named by its feature name, as upstream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzrec.core.errors import ConfigError, DataError
from tzrec.data import arrow_utils as au
from tzrec.data.features.base import BaseFeature, DenseData, SparseData
from tzrec.data.features.id_feature import IdFeature
from tzrec.data.features.raw_feature import RawFeature
from tzrec.data.fg import ops

FG_MODES = ("FG_DAG", "FG_NORMAL")
_SIDES = ("user", "item", "context", "feature", "const")
#: pyfg's fixed multi-value separator of lookup maps (``"k1:v1\x1dk2:v2"``).
_MAP_SEP = "\x1d"
#: The input whose values are parsed as numbers (blamed for a parse error).
_VALUE_INPUT = {"bool_mask_feature": 1}
#: custom_feature operators implemented here (upstream's official pyfg custom operators).
CUSTOM_OPERATORS = ("EditDistance",)


def split_expression(expr: str, where: str) -> tuple[str, str]:
    """``"user:age"`` -> ``("user", "age")``; ConfigError for an unknown input side."""
    if ":" not in expr:
        raise ConfigError(
            f"{where}: expression {expr!r} has no input side (expected <side>:<name>, side one "
            f"of {', '.join(_SIDES)})"
        )
    side, name = expr.split(":", 1)
    if side not in _SIDES or not name:
        raise ConfigError(
            f"{where}: expression {expr!r}: input side {side!r} is not one of {', '.join(_SIDES)}"
        )
    return side, name


def _repeated(fd: Any) -> bool:
    return bool(getattr(fd, "is_repeated", False)) or getattr(fd, "label", 1) == 3


def _project(cfg: Any, target: type, skip: tuple[str, ...] = ()) -> Any:
    """A ``target`` message holding the fields of ``cfg`` that ``target`` has alike."""
    out = target()
    fields = target.DESCRIPTOR.fields_by_name
    for fd, val in cfg.ListFields():
        tfd = fields.get(fd.name)
        if tfd is None or fd.name in skip or tfd.type != fd.type or _repeated(tfd) != _repeated(fd):
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(out, fd.name).update(dict(val))
        elif _repeated(fd):
            getattr(out, fd.name).extend(val)
        elif fd.message_type is not None:
            getattr(out, fd.name).CopyFrom(val)
        else:
            setattr(out, fd.name, val)
    return out


def _expressions(kind: str, cfg: Any) -> list[str]:
    """The input expressions of an FG config, in operator order."""
    if kind == "lookup_feature":
        return [cfg.map, cfg.key]
    if kind == "match_feature":
        return [cfg.nested_map, cfg.pkey, cfg.skey]
    if kind in ("overlap_feature",):
        return [cfg.query, cfg.title]
    if kind == "kv_dot_product":
        return [cfg.query, cfg.document]
    if kind == "expr_feature":
        return list(cfg.variables)
    if kind == "tokenize_feature":
        return [cfg.expression]
    return list(cfg.expression)


def _sparse_lookup(cfg: Any) -> bool:
    """Whether a lookup/match output is an id (string) bucketized like an id_feature."""
    return bool(
        cfg.HasField("hash_bucket_size")
        or cfg.HasField("num_buckets")
        or len(cfg.vocab_list)
        or len(cfg.vocab_dict)
        or cfg.vocab_file
        or getattr(cfg, "need_discrete", False)
    )


def target_class(kind: str, cfg: Any) -> type:
    """``IdFeature`` or ``RawFeature``: how the FG output of ``kind`` is bucketized."""
    if kind in ("combo_feature", "bool_mask_feature", "tokenize_feature"):
        return IdFeature
    if kind in ("lookup_feature", "match_feature"):
        return IdFeature if _sparse_lookup(cfg) else RawFeature
    if kind == "custom_feature":
        return IdFeature if _sparse_lookup(cfg) else RawFeature
    return RawFeature


class _FgMixin:
    """FG inputs, column resolution and dispatch to the operator of ``fg_kind``."""

    fg_config: Any
    fg_kind: str

    def _init_fg(self, fg_kind: str, fg_config: Any, where: str) -> None:
        self.fg_kind = fg_kind
        self.fg_config = fg_config
        self.fg_where = where
        self.fg_active = self.fg_mode in FG_MODES
        self.fg_inputs = [
            (e, *split_expression(e, where)) for e in _expressions(fg_kind, fg_config)
        ]
        self._refs: dict[str, BaseFeature] = {}
        self._program = None
        if self.fg_active:
            self._check_config()
        self.input_name = self.input_names[0]

    # ---- configuration --------------------------------------------------------------
    def _check_config(self) -> None:
        cfg, kind, where = self.fg_config, self.fg_kind, self.fg_where
        if kind == "combo_feature" and len(self.fg_inputs) < 2:
            raise ConfigError(f"{where}: combo_feature needs at least 2 expressions")
        if kind == "bool_mask_feature" and len(self.fg_inputs) != 2:
            raise ConfigError(f"{where}: bool_mask_feature needs 2 expressions (values, mask)")
        if kind == "lookup_feature" and cfg.combiner.lower() not in ops.COMBINERS:
            raise ConfigError(
                f"{where}: lookup_feature combiner {cfg.combiner!r} is not one of "
                f"{', '.join(c for c in ops.COMBINERS if c)}"
            )
        if kind == "match_feature" and "ALL" in (cfg.pkey, cfg.skey):
            raise ConfigError(f"{where}: match_feature pkey/skey ALL is not supported by tzrec")
        if kind == "overlap_feature" and cfg.method not in ops.OVERLAP_METHODS:
            raise ConfigError(
                f"{where}: overlap_feature method {cfg.method!r} is not supported (supported: "
                f"{', '.join(ops.OVERLAP_METHODS)})"
            )
        if kind == "custom_feature":
            if cfg.operator_name not in CUSTOM_OPERATORS or len(self.fg_inputs) != 2:
                raise ConfigError(
                    f"{where}: custom_feature operator {cfg.operator_name!r} is not supported "
                    f"(tzrec implements {', '.join(CUSTOM_OPERATORS)} with 2 expressions; other "
                    "operators are pyfg shared libraries)"
                )
        if kind == "expr_feature":
            from tzrec.data.fg.expr import compile_expression

            self._program = compile_expression(cfg.expression, context=f"{where} expr_feature")
            names = {n for _, _, n in self.fg_inputs}
            missing = [v for v in self._program.variables if v not in names]
            if missing:
                raise ConfigError(
                    f"{where}: expr_feature expression {cfg.expression!r} uses {missing[0]!r}, "
                    "which no entry of variables names"
                )

    def link(self, by_name: dict[str, BaseFeature]) -> None:
        """Resolve ``feature:<name>`` inputs to the features computing them."""
        for expr, side, name in self.fg_inputs:
            if side == "feature" and self.fg_active:
                ref = by_name.get(name)
                if ref is None or ref is self:
                    raise ConfigError(
                        f"{self.fg_where}: expression {expr!r} names feature '{name}', which is "
                        "not configured"
                    )
                self._refs[name] = ref

    @property
    def fg_references(self) -> list[BaseFeature]:
        """Features whose output this one reads (``feature:<name>`` inputs)."""
        return list(self._refs.values())

    # ---- columns --------------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        """Every column this feature reads (several for multi-input FG features)."""
        if not getattr(self, "fg_active", False):
            return [self.input_name]
        cols = [name for _, side, name in self.fg_inputs if side not in ("feature", "const")]
        for ref in self._refs.values():
            cols += ref_columns(ref)
        out: list[str] = []
        for c in cols:
            if c not in out:
                out.append(c)
        return out

    @property
    def input_names(self) -> list[str]:
        """FG: the first column an expression names; FG_NONE: the feature name's column."""
        if not getattr(self, "fg_active", False):
            return [self.name]
        cols = [
            name
            for _, side, name in getattr(self, "fg_inputs", [])
            if side not in ("feature", "const")
        ]
        return cols[:1] or [self.name]

    def resolve_input(self, columns: set[str] | list[str]) -> str | None:
        """FG: every expression's column must be present (DataError naming it)."""
        if not self.fg_active:
            return super().resolve_input(columns)  # type: ignore[misc]
        for expr, side, name in self.fg_inputs:
            if side not in ("feature", "const") and name not in columns:
                raise DataError(
                    f"feature '{self.name}': expression '{expr}' reads column '{name}', which the "
                    "input does not have"
                )
        self.input_name = self.input_names[0]
        return self.input_name

    # ---- parsing --------------------------------------------------------------------
    def parse(self, columns: dict[str, pa.Array]) -> Any:
        """FG output bucketized like an id/raw feature (FG_NONE: the encoded column)."""
        if not self.fg_active:
            return super().parse(columns)  # type: ignore[misc]
        n = _num_rows(columns, self.input_columns)
        inputs: list[pa.Array] = []
        for _, side, name in self.fg_inputs:
            if side == "const":
                inputs.append(pa.array([name] * n, pa.string()))
            elif side == "feature":
                inputs.append(ref_output(self._refs[name], columns))
            else:
                inputs.append(au.decode(au.combine(columns[name])))
        try:
            return _GENERATORS[self.fg_kind](self, inputs, n)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            expr, _, name = self._blame(inputs)
            reason = str(err).splitlines()[0]
            raise au.BadType(
                name, self.name, f"expression '{expr}': cannot compute {self.fg_kind} ({reason})"
            ) from None

    def _blame(self, inputs: list[pa.Array]) -> tuple[str, str, str]:
        """The input whose values an arrow error is about (maps hold the parsed values)."""
        return self.fg_inputs[_VALUE_INPUT.get(self.fg_kind, 0)]

    def _bad_rows(self, rows: np.ndarray, i: int, reason: str) -> au.BadRows:
        expr, _, name = self.fg_inputs[i]
        return au.BadRows(rows, name, self.name, f"expression '{expr}': {reason}")


def _num_rows(columns: dict[str, pa.Array], names: list[str]) -> int:
    for c in names:
        if c in columns:
            return len(columns[c])
    return len(next(iter(columns.values())))


def ref_columns(feature: BaseFeature) -> list[str]:
    """Columns a referenced (``feature:``) feature reads."""
    return list(getattr(feature, "input_columns", [feature.input_name]))


def ref_output(feature: BaseFeature, columns: dict[str, pa.Array]) -> pa.Array:
    """The output of another feature as per-row string lists (ids, or values as text)."""
    data = feature.parse(columns)
    if isinstance(data, SparseData):
        lengths = np.asarray(data.lengths, np.int64)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        return ops.lists_from(pa.array(data.values).cast(pa.string()), rows, len(lengths))
    if isinstance(data, DenseData):
        v = np.asarray(data.values)
        rows = np.repeat(np.arange(v.shape[0]), v.shape[1])
        return ops.lists_from(pa.array(v.reshape(-1)).cast(pa.string()), rows, v.shape[0])
    raise ConfigError(f"feature '{feature.name}': a sequence cannot be a feature: input")


# ---- generators: (feature, inputs, rows) -> parsed data --------------------------------------
def _gen_combo(f: Any, inputs: list[pa.Array], n: int) -> Any:
    parts = [ops.string_lists(a, f.multival_sep) for a in inputs]
    return f._parse_single(ops.product(parts))


def _gen_bool_mask(f: Any, inputs: list[pa.Array], n: int) -> Any:
    values = ops.string_lists(inputs[0], f.multival_sep)
    mask_arr = inputs[1]
    mask = (
        ops.string_lists(mask_arr, f.multival_sep)
        if au.is_stringlike(mask_arr.type)
        else au.to_list_array(mask_arr, f.multival_sep)
    )
    out, bad = ops.bool_mask(values, mask)
    if len(bad):
        raise f._bad_rows(bad, 1, "expected as many mask values as values")
    return f._parse_single(out)


def _lookup_result(f: Any, rows: np.ndarray, vals: pa.Array, n: int, combiner: str) -> Any:
    """Bucketize looked-up value texts: ids, a combined value, or bucketized values."""
    if isinstance(f, IdFeature):
        return f._parse_single(ops.lists_from(vals, rows, n))
    dim = f.value_dim
    if dim > 1:
        # a vector value (``"k:1,2"``): the first key found in the row gives it
        first = np.unique(rows, return_index=True)[1]
        if len(first) == 0:
            return f._parse_single(pa.nulls(n, pa.list_(pa.string())))
        sep = getattr(f.fg_config, "value_separator", ",")
        parts = ops.string_lists(vals.take(pa.array(first)), sep)
        idx = np.zeros(n, np.int64)
        valid = np.zeros(n, bool)
        idx[rows[first]] = np.arange(len(first))
        valid[rows[first]] = True
        full = parts.take(pa.array(idx))
        return f._parse_single(pc.if_else(pa.array(valid), full, pa.nulls(n, full.type)))
    x = ops.to_float(vals)
    if combiner == "":
        if f.is_sparse:
            if f._normalize is not None:
                x = f._normalize(x.astype(np.float32))
            ids = f._bucketize(x.astype(np.float32))
            out_rows, out_ids = rows, ids
            has = np.bincount(rows, minlength=n) > 0
            if (~has).any() and f.default_value is not None:
                d = np.asarray(f.default_value, np.float32)
                if f._normalize is not None:
                    d = f._normalize(d)
                dflt = int(f._bucketize(d)[0])
                miss = np.nonzero(~has)[0]
                out_rows = np.concatenate([rows, miss])
                out_ids = np.concatenate([ids, np.full(len(miss), dflt, np.int64)])
                order = np.argsort(out_rows, kind="stable")
                out_rows, out_ids = out_rows[order], out_ids[order]
            lengths = np.bincount(out_rows, minlength=n).astype(np.int32)
            return SparseData(f.name, out_ids.astype(np.int64), lengths)
        combiner = "sum"
    value, has = ops.reduce_rows(x, rows, n, combiner)
    return f._parse_single(pa.array(value, pa.float64(), mask=~has))


def _gen_lookup(f: Any, inputs: list[pa.Array], n: int) -> Any:
    cfg = f.fg_config
    m_rows, m_keys, m_vals = ops.map_entries(inputs[0], _MAP_SEP)
    q = ops.string_lists(inputs[1], cfg.separator)
    q_rows = au.parent_rows(au.list_offsets(q))
    pos = ops.row_index_in(q_rows, au.list_values(q), m_rows, m_keys)
    hit = pos >= 0
    combiner = "" if cfg.need_discrete else cfg.combiner.lower()
    return _lookup_result(f, q_rows[hit], m_vals.take(pa.array(pos[hit])), n, combiner)


def _gen_match(f: Any, inputs: list[pa.Array], n: int) -> Any:
    nested = inputs[0]
    if pa.types.is_map(nested.type):
        p_rows, pks, rest = ops.map_entries(nested, _MAP_SEP)
    else:
        outer = ops.string_lists(nested, "|")
        p_rows, pks, rest = ops.parse_kv(outer, "^")
    items = ops.string_lists(rest, ",")
    if len(au.list_values(items)) == 0:
        e_rows = np.zeros(0, np.int64)
        e_keys = pa.array([], pa.string())
        e_vals = pa.array([], pa.string())
    else:
        entry, sks, vals = ops.parse_kv(items, ":")
        e_rows = p_rows[entry]
        e_keys = _join_keys(pks.take(pa.array(entry)), sks)
        e_vals = vals
    sep = f.fg_config.separator
    qp = ops.string_lists(inputs[1], sep)
    qs = ops.string_lists(inputs[2], sep)
    q = ops.product([qp, qs], joiner=ops._ROW_SEP)
    q_rows = au.parent_rows(au.list_offsets(q))
    pos = ops.row_index_in(q_rows, au.list_values(q), e_rows, e_keys)
    hit = pos >= 0
    combiner = "" if f.fg_config.need_discrete else "sum"
    return _lookup_result(f, q_rows[hit], e_vals.take(pa.array(pos[hit])), n, combiner)


def _join_keys(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(a, b, ops._ROW_SEP)


def _dense(f: Any, values: np.ndarray) -> Any:
    return f._parse_single(pa.array(np.asarray(values, np.float64)))


def _gen_expr(f: Any, inputs: list[pa.Array], n: int) -> Any:
    cols = {name: arr for (_, _, name), arr in zip(f.fg_inputs, inputs, strict=True)}
    cols = {k: cols[k] for k in f._program.variables}
    try:
        out = f._program.evaluate(cols, num_rows=n)
    except DataError as err:
        raise DataError(f"feature '{f.name}': {err}") from None
    cfg = f.fg_config
    if cfg.HasField("fill_missing"):
        out = np.where(np.isnan(out), cfg.fill_missing, out)
    return _dense(f, out)


def _gen_overlap(f: Any, inputs: list[pa.Array], n: int) -> Any:
    q = ops.string_lists(inputs[0], f.multival_sep)
    t = ops.string_lists(inputs[1], f.multival_sep)
    return _dense(f, ops.overlap(q, t, f.fg_config.method))


def _gen_kv_dot(f: Any, inputs: list[pa.Array], n: int) -> Any:
    return _dense(f, ops.kv_dot(inputs[0], inputs[1], f.multival_sep, n))


def _gen_custom(f: Any, inputs: list[pa.Array], n: int) -> Any:
    params = f.fg_config.operator_params
    encoding = "latin"
    if "encoding" in params.fields:
        encoding = params.fields["encoding"].string_value or "latin"
    dist = ops.edit_distance(inputs[0], inputs[1], encoding)
    if isinstance(f, IdFeature):
        return f._parse_single(pa.array(dist.astype(np.int64)).cast(pa.string()))
    return _dense(f, dist)


def _gen_tokenize(f: Any, inputs: list[pa.Array], n: int) -> Any:
    offsets, ids = f.tokenizer.encode(inputs[0])
    return SparseData(f.name, ids.astype(np.int64), np.diff(offsets).astype(np.int32))


_GENERATORS = {
    "combo_feature": _gen_combo,
    "bool_mask_feature": _gen_bool_mask,
    "lookup_feature": _gen_lookup,
    "match_feature": _gen_match,
    "expr_feature": _gen_expr,
    "overlap_feature": _gen_overlap,
    "kv_dot_product": _gen_kv_dot,
    "custom_feature": _gen_custom,
    "tokenize_feature": _gen_tokenize,
}
#: FG feature kinds tzrec-data computes (non-sequence; sequence variants are refused).
FG_KINDS = tuple(_GENERATORS)


class FgIdFeature(_FgMixin, IdFeature):
    """An FG feature whose output is bucketized as an ``id_feature``."""


class FgRawFeature(_FgMixin, RawFeature):
    """An FG feature whose output is a ``raw_feature`` value (dense or bucketized)."""


def create_fg_feature(kind: str, cfg: Any, where: str, **kwargs: Any) -> BaseFeature:
    """The feature object of one FG feature config (``combo_feature``, ...)."""
    from tzrec.protos import feature_pb2

    target = target_class(kind, cfg)
    tokenizer = None
    if kind == "tokenize_feature":
        from tzrec.data.fg.tokenize import build_tokenizer

        tokenizer = build_tokenizer(cfg, None, context=f"{where} tokenize_feature")
    if tokenizer is not None:
        skip = ("expression", "default_value", "vocab_file", "asset_dir")
        proj = _project(cfg, feature_pb2.IdFeature, skip=skip)
        proj.num_buckets = tokenizer.vocab_size  # ids of the vocabulary, added tokens included
        feat: BaseFeature = FgIdFeature(proj, "id_feature", **kwargs)
        feat.tokenizer = tokenizer  # type: ignore[attr-defined]
    elif target is IdFeature:
        proj = _project(cfg, feature_pb2.IdFeature, skip=("expression",))
        if kind in ("lookup_feature", "match_feature") and not cfg.HasField("value_dim"):
            proj.value_dim = 1
        feat = FgIdFeature(proj, "id_feature", **kwargs)
    else:
        proj = _project(cfg, feature_pb2.RawFeature, skip=("expression", "value_dim"))
        if kind in ("lookup_feature",) and cfg.value_dim > 1:
            proj.value_dim = cfg.value_dim
        feat = FgRawFeature(proj, "raw_feature", **kwargs)
    feat._init_fg(kind, cfg, where)  # type: ignore[attr-defined]
    if feat.is_sparse:
        try:
            feat.num_embeddings  # noqa: B018  (an id output needs a table size)
        except ConfigError as err:
            raise ConfigError(f"{where}: {kind} '{cfg.feature_name}': {err}") from None
    return feat


__all__ = [
    "CUSTOM_OPERATORS",
    "FG_KINDS",
    "FG_MODES",
    "FgIdFeature",
    "FgRawFeature",
    "create_fg_feature",
    "split_expression",
    "target_class",
]
