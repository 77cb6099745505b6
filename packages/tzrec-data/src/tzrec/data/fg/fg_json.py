"""The fg.json a serving system's feature generator reads, written from a pipeline config.

Each feature config becomes the entries upstream TorchEasyRec's feature classes write
(``BaseFeature.fg_json``): the same keys, values and key order, so a serving system that
reads upstream's fg.json reads ours. A ``sequence_feature`` group becomes one entry with
``sequence_name`` / ``sequence_length`` / ``sequence_delim`` / ``sequence_pk`` and its
sub-features; a standalone ``sequence_*`` feature gets ``sequence_`` before its
``feature_type`` plus its own ``sequence_delim`` and ``sequence_length``. With an
``asset_dir``, vocab, stop-char and operator files are copied there as
``<stem>_<md5><ext>`` and named by that relative file name (upstream's ``_copy_assets``).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from tzrec.core.errors import ConfigError
from tzrec.protos import feature_pb2

#: the hash bucket size upstream writes for zch / dynamicemb features (ids kept whole)
MAX_HASH_BUCKET_SIZE = 2**63 - 1
DEFAULT_SEPARATOR = "\x1d"
INPUT_SIDES = ("user", "item", "context", "feature", "const")
#: fg parameter bits of the text normalizer options (upstream's NORM_OPTION_MAPPING)
NORM_OPTION_BITS = {
    feature_pb2.TEXT_LOWER2UPPER: 2,
    feature_pb2.TEXT_UPPER2LOWER: 4,
    feature_pb2.TEXT_SBC2DBC: 8,
    feature_pb2.TEXT_CHT2CHS: 16,
    feature_pb2.TEXT_FILTER: 32,
    feature_pb2.TEXT_SPLITCHRS: 512,
}
#: keys ``remove_bucketizer`` drops (``vocab_file`` stays for tokenize_feature)
BUCKETIZER_KEYS = ("hash_bucket_size", "vocab_dict", "vocab_list", "boundaries", "num_buckets")


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    A reader never sees a half-written file; the file gets the usual umask mode.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Feature:
    """One feature config and where it sits: the facts upstream's feature classes derive."""

    def __init__(
        self,
        cfg: Message,
        kind: str,
        where: str,
        *,
        is_sequence: bool,
        grouped: bool,
        assets: _Assets,
    ) -> None:
        self.cfg = cfg
        self.kind = kind
        self.where = where
        self.is_sequence = is_sequence
        self.grouped = grouped
        self.assets = assets

    def has(self, name: str) -> bool:
        """Whether the message has field ``name`` and it is set."""
        return name in self.cfg.DESCRIPTOR.fields_by_name and self.cfg.HasField(name)

    def error(self, field: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where} {field}: {message}")

    @property
    def default_value(self) -> str:
        """``default_value``; a sequence's empty default becomes ``"0"`` (as upstream)."""
        val = self.cfg.default_value
        return "0" if self.is_sequence and not val else val

    @property
    def default_bucketize_value(self) -> int:
        return self.cfg.default_bucketize_value if self.has("default_bucketize_value") else 1

    def vocab_list(self) -> list[str]:
        """``vocab_list``; without ``default_bucketize_value`` led by default value and <OOV>."""
        vocab = list(self.cfg.vocab_list)
        if not vocab or self.has("default_bucketize_value"):
            return vocab
        return [self.default_value, "<OOV>", *vocab]

    def vocab_dict(self) -> dict[str, int]:
        """``vocab_dict``; without ``default_bucketize_value`` the default value maps to 0."""
        vocab = dict(self.cfg.vocab_dict)
        if vocab and not self.has("default_bucketize_value") and self.default_value:
            vocab[self.default_value] = 0
        return vocab

    def vocab_file(self) -> str:
        """``vocab_file`` (under ``asset_dir``), or its copy's name in the output asset dir."""
        if not self.has("vocab_file"):
            return ""
        if self.kind != "tokenize_feature" and not self.has("default_bucketize_value"):
            raise self.error("vocab_file", "needs default_bucketize_value (as upstream)")
        return self.assets.file(self, "vocab_file", self.cfg.vocab_file)

    def sequence_fields(self, fg: dict[str, Any]) -> None:
        if self.grouped and len(self.cfg.sequence_fields) > 0:
            fg["sequence_fields"] = list(self.cfg.sequence_fields)

    def stub_type(self, fg: dict[str, Any]) -> None:
        if self.has("stub_type"):
            fg["stub_type"] = self.cfg.stub_type

    def separator(self, fg: dict[str, Any]) -> None:
        if self.cfg.separator != DEFAULT_SEPARATOR:
            fg["separator"] = self.cfg.separator

    def check_input(self, field: str, value: str, allow_all: bool = False) -> None:
        """An fg input ``<side>:<name>`` with a side upstream knows."""
        if allow_all and value == "ALL":
            return
        side, sep, name = value.partition(":")
        if not sep or not name or ":" in name or side not in INPUT_SIDES:
            raise self.error(
                field,
                f"{value!r} is not an fg input '<side>:<name>' with side one of "
                f"{', '.join(INPUT_SIDES)}",
            )


class _Assets:
    """Where asset files are found and, with an output dir, copied as ``<stem>_<md5><ext>``."""

    def __init__(self, asset_dir: str | Path | None, config_dir: str | Path | None) -> None:
        self.asset_dir = Path(asset_dir) if asset_dir is not None else None
        self.config_dir = Path(config_dir) if config_dir is not None else None

    def file(self, feature: _Feature, field: str, value: str) -> str:
        """The name the fg.json gives an asset (copied into the output asset dir, if any)."""
        path = os.path.join(feature.cfg.asset_dir, value) if feature.has("asset_dir") else value
        if self.asset_dir is None or not value:
            return path
        source = self._find(feature, field, path)
        digest = hashlib.md5(source.read_bytes()).hexdigest()
        stem, ext = os.path.splitext(source.name)
        name = f"{stem}_{digest}{ext}"
        target = self.asset_dir / name
        if not target.exists():
            write_atomic(target, source.read_bytes())
        return name

    def _find(self, feature: _Feature, field: str, path: str) -> Path:
        p = Path(path)
        candidates = [p] if p.is_absolute() else []
        if not p.is_absolute():
            if self.config_dir is not None:
                candidates.append(self.config_dir / p)
            candidates.append(Path.cwd() / p)
        for c in candidates:
            if c.is_file():
                return c
        looked = ", ".join(str(c) for c in candidates)
        raise feature.error(field, f"{path!r} not found (looked at {looked})")


# -- one builder per feature type: upstream's ``_fg_json`` of that class -------------------


def _id_bucketizer(f: _Feature, fg: dict[str, Any], *, num_buckets: bool) -> None:
    cfg = f.cfg
    if f.has("zch") or f.has("dynamicemb"):
        fg["hash_bucket_size"] = MAX_HASH_BUCKET_SIZE
    elif f.has("hash_bucket_size"):
        fg["hash_bucket_size"] = cfg.hash_bucket_size
    elif f.vocab_list():
        fg["vocab_list"] = f.vocab_list()
        fg["default_bucketize_value"] = f.default_bucketize_value
    elif f.vocab_dict():
        fg["vocab_dict"] = f.vocab_dict()
        fg["default_bucketize_value"] = f.default_bucketize_value
    elif f.vocab_file():
        fg["vocab_file"] = f.vocab_file()
        fg["default_bucketize_value"] = f.default_bucketize_value
    elif num_buckets and f.has("num_buckets"):
        fg["num_buckets"] = cfg.num_buckets


def _discrete_bucketizer(f: _Feature, fg: dict[str, Any], *, int_num_buckets: bool) -> bool:
    """Lookup / match / custom order; True when the output became discrete (string ids)."""
    cfg = f.cfg
    if f.has("zch") or f.has("dynamicemb"):
        fg["hash_bucket_size"] = MAX_HASH_BUCKET_SIZE
    elif f.has("hash_bucket_size"):
        fg["hash_bucket_size"] = cfg.hash_bucket_size
    elif f.has("num_buckets"):
        fg["num_buckets"] = cfg.num_buckets
        if int_num_buckets:
            fg["value_type"] = "int64"
            return False
    elif f.vocab_list():
        fg["vocab_list"] = f.vocab_list()
        fg["default_bucketize_value"] = f.default_bucketize_value
    elif f.vocab_dict():
        fg["vocab_dict"] = f.vocab_dict()
        fg["default_bucketize_value"] = f.default_bucketize_value
    elif f.vocab_file():
        fg["vocab_file"] = f.vocab_file()
        fg["default_bucketize_value"] = f.default_bucketize_value
    else:
        if len(cfg.boundaries) > 0:
            fg["boundaries"] = list(cfg.boundaries)
        return False
    fg["value_type"] = "string"
    return True


def _id_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("expression", cfg.expression)
    fg: dict[str, Any] = {
        "feature_type": "id_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "expression": cfg.expression,
        "value_type": "string",
        "need_prefix": False,
    }
    f.separator(fg)
    _id_bucketizer(f, fg, num_buckets=True)
    if cfg.weighted:
        fg["weighted"] = True
    if f.has("value_dim"):
        fg["value_dim"] = cfg.value_dim
    else:
        fg["value_dim"] = 1 if f.is_sequence else 0
    if f.has("fg_value_type"):
        fg["value_type"] = cfg.fg_value_type
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _raw_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("expression", cfg.expression)
    fg: dict[str, Any] = {
        "feature_type": "raw_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "expression": cfg.expression,
        "value_type": "float",
    }
    if cfg.value_dim > 1:
        f.separator(fg)
        fg["value_dim"] = cfg.value_dim
    if cfg.normalizer != "":
        fg["normalizer"] = cfg.normalizer
    if len(cfg.boundaries) > 0:
        fg["boundaries"] = list(cfg.boundaries)
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _combo_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    if len(cfg.expression) == 0:
        raise f.error("expression", "must list the fg inputs, e.g. user:cate")
    for e in cfg.expression:
        f.check_input("expression", e)
    fg: dict[str, Any] = {
        "feature_type": "combo_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "expression": list(cfg.expression),
        "value_type": "string",
        "need_prefix": False,
        "value_dim": cfg.value_dim,
    }
    f.separator(fg)
    _id_bucketizer(f, fg, num_buckets=False)
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _combine_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("expression", cfg.expression)
    fg: dict[str, Any] = {
        "feature_type": "combine_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "expression": cfg.expression,
        "value_type": "float",
        "need_prefix": False,
        "combiner": cfg.combiner.lower(),
    }
    f.separator(fg)
    if f.has("normalizer"):
        fg["normalizer"] = cfg.normalizer
    if len(cfg.value_map) > 0:
        fg["value_map"] = dict(cfg.value_map)
    if f.has("num_buckets"):
        fg["num_buckets"] = cfg.num_buckets
        fg["value_type"] = "int64"
    elif len(cfg.boundaries) > 0:
        fg["boundaries"] = list(cfg.boundaries)
    if f.has("num_buckets") or len(cfg.boundaries) > 0:
        fg["value_dim"] = 1
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _lookup_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("map", cfg.map)
    f.check_input("key", cfg.key)
    fg: dict[str, Any] = {
        "feature_type": "lookup_feature",
        "feature_name": cfg.feature_name,
        "map": cfg.map,
        "key": cfg.key,
        "default_value": f.default_value,
        "value_type": "float",
        "needDiscrete": cfg.need_discrete,
        "needKey": cfg.need_key,
        "combiner": cfg.combiner.lower(),
    }
    raw: dict[str, Any] | None = None
    if cfg.value_dim > 1:
        # a vector value: a string lookup (stub) split by a raw_feature of value_dim floats
        fg["feature_name"] = cfg.feature_name + "__lookup"
        fg["default_value"] = cfg.value_separator.join([f.default_value] * cfg.value_dim)
        fg["value_type"] = "string"
        fg["value_dim"] = 1
        fg["needDiscrete"] = True
        fg["combiner"] = ""
        fg["stub_type"] = True
        raw = {
            "feature_type": "raw_feature",
            "feature_name": cfg.feature_name,
            "default_value": f.default_value,
            "expression": "feature:" + fg["feature_name"],
            "separator": cfg.value_separator,
            "value_dim": cfg.value_dim,
            "value_type": "float",
        }
        if f.has("normalizer"):
            raw["normalizer"] = cfg.normalizer
        if len(cfg.boundaries) > 0:
            raw["boundaries"] = list(cfg.boundaries)
    else:
        f.separator(fg)
        if f.has("normalizer"):
            fg["normalizer"] = cfg.normalizer
        _discrete_bucketizer(f, fg, int_num_buckets=False)
        if f.has("fg_value_type"):
            fg["value_type"] = cfg.fg_value_type
        if fg["value_type"] == "string":
            fg["needDiscrete"] = True
        if fg["needDiscrete"]:
            fg["combiner"] = ""
        if fg["combiner"] == "":
            fg["value_dim"] = cfg.value_dim if f.has("value_dim") else 1
        f.stub_type(fg)
    if f.grouped:
        f.sequence_fields(fg)
        if raw is not None:
            raw["sequence_fields"] = [cfg.feature_name + "__lookup"]
    return [fg] if raw is None else [fg, raw]


def _match_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("nested_map", cfg.nested_map)
    f.check_input("pkey", cfg.pkey, allow_all=True)
    f.check_input("skey", cfg.skey, allow_all=True)
    fg: dict[str, Any] = {
        "feature_type": "match_feature",
        "feature_name": cfg.feature_name,
        "user": cfg.nested_map,
        "category": cfg.pkey,
        "item": cfg.skey,
        "matchType": "hit",
        "default_value": f.default_value,
        "value_type": "float",
        "needDiscrete": cfg.need_discrete,
        "show_category": cfg.show_pkey,
        "show_item": cfg.show_skey,
    }
    if cfg.pkey == "ALL" or cfg.skey == "ALL":
        fg["matchType"] = "multihit"
    f.separator(fg)
    if f.has("normalizer"):
        fg["normalizer"] = cfg.normalizer
    if _discrete_bucketizer(f, fg, int_num_buckets=False):
        fg["needDiscrete"] = True
    if fg["needDiscrete"]:
        fg["value_dim"] = cfg.value_dim if f.has("value_dim") else 1
    if f.has("fg_value_type"):
        fg["value_type"] = cfg.fg_value_type
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _expr_feature(f: _Feature) -> list[dict[str, Any]]:
    from tzrec.data.fg.expr import compile_expression

    cfg = f.cfg
    if len(cfg.variables) == 0:
        raise f.error("variables", "must list the expression's inputs, e.g. user:age")
    names = []
    for v in cfg.variables:
        f.check_input("variables", v)
        names.append(v.partition(":")[2])
    program = compile_expression(cfg.expression, context=f.where)
    unknown = [v for v in program.variables if v not in names]
    if unknown:
        raise f.error(
            "expression",
            f"{cfg.expression!r} reads {', '.join(map(repr, unknown))}, which variables "
            f"({', '.join(cfg.variables)}) do not provide",
        )
    fg: dict[str, Any] = {
        "feature_type": "expr_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "expression": cfg.expression,
        "variables": list(cfg.variables),
        "value_type": "float",
    }
    f.separator(fg)
    if f.has("fill_missing"):
        fg["fill_missing"] = cfg.fill_missing
    if len(cfg.boundaries) > 0:
        fg["boundaries"] = list(cfg.boundaries)
    if f.has("value_dim"):
        fg["value_dim"] = cfg.value_dim
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _overlap_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("query", cfg.query)
    f.check_input("title", cfg.title)
    fg: dict[str, Any] = {
        "feature_type": "overlap_feature",
        "feature_name": cfg.feature_name,
        "query": cfg.query,
        "title": cfg.title,
        "method": cfg.method,
        "value_type": "float",
        "separator": cfg.separator,
    }
    if cfg.normalizer != "":
        fg["normalizer"] = cfg.normalizer
    if len(cfg.boundaries) > 0:
        fg["boundaries"] = list(cfg.boundaries)
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _tokenize_feature(f: _Feature) -> list[dict[str, Any]]:
    from tzrec.data.fg.tokenize import TOKENIZER_TYPES

    cfg = f.cfg
    f.check_input("expression", cfg.expression)
    if not cfg.vocab_file:
        raise f.error("vocab_file", "must name a tokenizer.json")
    out: list[dict[str, Any]] = []
    expression = cfg.expression
    norm_name = cfg.feature_name + "__text_norm"
    has_norm = cfg.HasField("text_normalizer")
    if has_norm:
        norm = cfg.text_normalizer
        expression = "feature:" + norm_name
        nfg: dict[str, Any] = {
            "feature_type": "text_normalizer",
            "feature_name": norm_name,
            "expression": cfg.expression,
            "is_gbk_input": False,
            "is_gbk_output": False,
            "stub_type": True,
        }
        if norm.HasField("max_length"):
            nfg["max_length"] = norm.max_length
        if norm.HasField("stop_char_file") and norm.stop_char_file:
            nfg["stop_char_file"] = f.assets.file(
                f, "text_normalizer.stop_char_file", norm.stop_char_file
            )
        if len(norm.norm_options) > 0:
            parameter = 0
            for option in norm.norm_options:
                parameter += NORM_OPTION_BITS.get(option, 0)
                if option == feature_pb2.TEXT_REMOVE_SPACE:
                    nfg["remove_space"] = True
            nfg["parameter"] = parameter
        f.sequence_fields(nfg)
        out.append(nfg)
    if cfg.tokenizer_type not in TOKENIZER_TYPES:
        raise f.error(
            "tokenizer_type", f"{cfg.tokenizer_type!r} is not one of {', '.join(TOKENIZER_TYPES)}"
        )
    fg: dict[str, Any] = {
        "feature_type": "tokenize_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "vocab_file": f.vocab_file(),
        "expression": expression,
        "tokenizer_type": cfg.tokenizer_type,
        "output_type": "word_id",
    }
    f.stub_type(fg)
    if f.grouped:
        if has_norm:
            fg["sequence_fields"] = [norm_name]
        else:
            f.sequence_fields(fg)
    out.append(fg)
    return out


def _kv_dot_product(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    f.check_input("query", cfg.query)
    f.check_input("document", cfg.document)
    fg: dict[str, Any] = {
        "feature_type": "kv_dot_product",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "query": cfg.query,
        "document": cfg.document,
    }
    f.separator(fg)
    if f.has("kv_delimiter"):
        fg["kv_delimiter"] = cfg.kv_delimiter
    if len(cfg.boundaries) > 0:
        fg["boundaries"] = list(cfg.boundaries)
    f.stub_type(fg)
    f.sequence_fields(fg)
    return [fg]


def _bool_mask_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    if len(cfg.expression) == 0:
        raise f.error("expression", "must list the fg inputs, e.g. item:tags, item:mask")
    for e in cfg.expression:
        f.check_input("expression", e)
    fg: dict[str, Any] = {
        "feature_type": "bool_mask_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "expression": list(cfg.expression),
    }
    f.separator(fg)
    _id_bucketizer(f, fg, num_buckets=True)
    fg["value_dim"] = cfg.value_dim if f.has("value_dim") else 0
    if f.has("fg_value_type"):
        fg["value_type"] = cfg.fg_value_type
    f.stub_type(fg)
    _own_sequence_keys(f, fg)
    return [fg]


def _custom_feature(f: _Feature) -> list[dict[str, Any]]:
    cfg = f.cfg
    for e in cfg.expression:
        f.check_input("expression", e)
    lib = cfg.operator_lib_file
    if lib and not lib.startswith("pyfg/lib/"):
        # pyfg's own operator libraries (pyfg/lib/...) stay as named: the serving side has them
        lib = f.assets.file(f, "operator_lib_file", lib)
    fg: dict[str, Any] = {
        "feature_type": "custom_feature",
        "feature_name": cfg.feature_name,
        "default_value": f.default_value,
        "operator_name": cfg.operator_name,
        "operator_lib_file": lib,
        "is_op_thread_safe": cfg.is_op_thread_safe,
        "expression": list(cfg.expression),
        "value_type": "float",
    }
    if cfg.HasField("operator_params"):
        fg.update(MessageToDict(cfg.operator_params))
    f.separator(fg)
    if f.has("normalizer"):
        fg["normalizer"] = cfg.normalizer
    _discrete_bucketizer(f, fg, int_num_buckets=True)
    fg["value_dim"] = cfg.value_dim if f.has("value_dim") else 1
    f.stub_type(fg)
    _own_sequence_keys(f, fg)
    if f.is_sequence:
        fg["is_sequence"] = True
    return [fg]


def _own_sequence_keys(f: _Feature, fg: dict[str, Any]) -> None:
    """bool_mask / custom write their sequence keys themselves (no ``sequence_`` prefix)."""
    if not f.is_sequence:
        return
    if f.grouped:
        f.sequence_fields(fg)
    else:
        fg["sequence_delim"] = f.cfg.sequence_delim
        fg["sequence_length"] = f.cfg.sequence_length


_BUILDERS = {
    "id_feature": _id_feature,
    "raw_feature": _raw_feature,
    "combo_feature": _combo_feature,
    "combine_feature": _combine_feature,
    "lookup_feature": _lookup_feature,
    "match_feature": _match_feature,
    "expr_feature": _expr_feature,
    "overlap_feature": _overlap_feature,
    "tokenize_feature": _tokenize_feature,
    "kv_dot_product": _kv_dot_product,
    "bool_mask_feature": _bool_mask_feature,
    "custom_feature": _custom_feature,
}
#: types whose builder writes its own sequence keys (upstream overrides ``fg_json`` there)
_OWN_SEQUENCE = {"bool_mask_feature", "custom_feature"}
#: every feature type an fg.json entry can be written for
FEATURE_TYPES: tuple[str, ...] = tuple(_BUILDERS)


def _feature_fg_json(
    f: _Feature,
) -> list[dict[str, Any]]:
    """The fg.json entries of one (sub-)feature, with upstream's sequence rewriting."""
    entries = _BUILDERS[f.kind](f)
    tokens_as_sequence = f.kind == "tokenize_feature" and f.cfg.tokens_as_sequence
    if f.is_sequence and f.kind not in _OWN_SEQUENCE and not tokens_as_sequence:
        for fg in entries:
            if not fg.get("default_value"):
                fg["default_value"] = "0"
            if not f.grouped:
                fg["sequence_delim"] = f.cfg.sequence_delim
                fg["sequence_length"] = f.cfg.sequence_length
                fg["feature_type"] = f"sequence_{fg['feature_type']}"
    if tokens_as_sequence:
        for fg in entries:
            if fg["feature_type"] == "tokenize_feature" and not fg.get("default_value"):
                fg["default_value"] = "0"
    return entries


def _remove_bucketizer(fg: dict[str, Any]) -> dict[str, Any]:
    for key in BUCKETIZER_KEYS:
        fg.pop(key, None)
    if fg["feature_type"] != "tokenize_feature":
        fg.pop("vocab_file", None)
    return fg


def create_fg_json(
    feature_configs: Sequence[feature_pb2.FeatureConfig],
    *,
    asset_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
    remove_bucketizer: bool = False,
    reserves: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``{"features": [...]}`` (plus ``reserves``) for ``feature_configs``, as upstream writes it.

    ``asset_dir``: copy vocab/stop-char/operator files there and name them relatively;
    ``config_dir``: where relative asset paths are looked up first (then the cwd);
    ``remove_bucketizer``: drop hash/vocab/boundary keys (upstream's ``--remove_bucketizer``).
    """
    assets = _Assets(asset_dir, config_dir)
    results: list[dict[str, Any]] = []
    for i, fc in enumerate(feature_configs):
        kind = fc.WhichOneof("feature")
        if kind is None:
            raise ConfigError(f"feature_configs[{i}]: no feature type set")
        cfg = getattr(fc, kind)
        if kind == "sequence_feature":
            results.append(_sequence_group(i, cfg, assets, remove_bucketizer))
            continue
        base = kind.removeprefix("sequence_")
        if base not in _BUILDERS:
            raise ConfigError(f"feature_configs[{i}]: {kind} has no fg.json form")
        name = getattr(cfg, "feature_name", "")
        tokens_seq = base == "tokenize_feature" and cfg.tokens_as_sequence
        if tokens_seq and kind != "tokenize_feature":
            raise ConfigError(
                f"feature_configs[{i}] {kind} {name!r} tokens_as_sequence: only valid on "
                "tokenize_feature, not sequence_tokenize_feature"
            )
        f = _Feature(
            cfg,
            base,
            f"feature_configs[{i}] {kind} {name!r}",
            is_sequence=kind.startswith("sequence_") or tokens_seq,
            grouped=False,
            assets=assets,
        )
        entries = _feature_fg_json(f)
        if remove_bucketizer:
            entries = [_remove_bucketizer(e) for e in entries]
        results.extend(entries)
    out: dict[str, Any] = {"features": results}
    if reserves is not None:
        out["reserves"] = list(reserves)
    return out


def _sequence_group(
    i: int, seq: feature_pb2.SequenceFeature, assets: _Assets, remove_bucketizer: bool
) -> dict[str, Any]:
    group: dict[str, Any] = {
        "sequence_name": seq.sequence_name,
        "sequence_length": seq.sequence_length,
        "sequence_delim": seq.sequence_delim,
        "sequence_pk": seq.sequence_pk or f"user:{seq.sequence_name}",
        "features": [],
    }
    for j, sub in enumerate(seq.features):
        kind = sub.WhichOneof("feature")
        where = f"feature_configs[{i}] sequence_feature {seq.sequence_name!r} features[{j}]"
        if kind is None:
            raise ConfigError(f"{where}: no feature type set")
        cfg = getattr(sub, kind)
        f = _Feature(
            cfg,
            kind,
            f"{where} {kind} {cfg.feature_name!r}",
            is_sequence=True,
            grouped=True,
            assets=assets,
        )
        if kind == "tokenize_feature" and cfg.tokens_as_sequence:
            raise f.error("tokens_as_sequence", "not valid inside a sequence_feature group")
        entries = _feature_fg_json(f)
        if remove_bucketizer:
            entries = [_remove_bucketizer(e) for e in entries]
        group["features"].extend(entries)
    return group


__all__ = [
    "BUCKETIZER_KEYS",
    "FEATURE_TYPES",
    "MAX_HASH_BUCKET_SIZE",
    "create_fg_json",
    "write_atomic",
]
