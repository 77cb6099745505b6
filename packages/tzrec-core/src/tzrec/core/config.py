"""Pipeline config API: load (text format or JSON), save, edit, validate.

Configs are ``tzrec.protos.pipeline_pb2.EasyRecConfig`` messages, field-compatible with
TorchEasyRec. Every problem is reported as a :class:`ConfigError` whose message is one line
naming the file, the line or field, and what was expected.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tzrec.core.config_edit import edit_config
from tzrec.core.errors import ConfigError
from tzrec.core.support import check_supported_fields
from tzrec.protos import data_pb2, pipeline_pb2

logger = logging.getLogger(__name__)

__all__ = [
    "edit_config",
    "load_pipeline_config",
    "parse_pipeline_config",
    "save_message",
    "validate_pipeline_config",
]


def _load_plugin_schemas() -> None:
    """Import installed plugins so their proto extensions are known to the parser."""
    from tzrec.core.plugins import load_plugins

    load_plugins()


def parse_pipeline_config(
    text: str,
    source: str = "<string>",
    fmt: str = "text",
    allow_unknown_field: bool = False,
) -> pipeline_pb2.EasyRecConfig:
    """Parse config text (``fmt`` is ``"text"`` or ``"json"``) into an EasyRecConfig."""
    _load_plugin_schemas()
    config = pipeline_pb2.EasyRecConfig()
    if fmt == "json":
        try:
            json_format.Parse(text, config, ignore_unknown_fields=allow_unknown_field)
        except json_format.ParseError as e:
            raise ConfigError(f"{source}: {_one_line(str(e))}") from None
        conflict = _first_choice_conflict(config)
        if conflict:
            raise ConfigError(f"{source}: {conflict}")
    else:
        try:
            parser = _OneChoiceParser(allow_unknown_field=allow_unknown_field)
            parser.MergeLines(text.split("\n"), config)
        except text_format.ParseError as e:
            line, col = e.GetLine(), e.GetColumn()
            msg = _one_line(str(e))
            # ParseError messages start with "line:col : "; keep only the description.
            prefix = f"{line}:{col} : "
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
            where = f"{source}:{line}:{col}" if line else source
            if "Extension" in msg and "not registered" in msg:
                msg += "; install the plugin that defines it (`tzrec plugins` lists them)"
            raise ConfigError(f"{where}: {msg}") from None
    _apply_fg_compat(config, source)
    return config


def _choice_conflict(message: Message, field: FieldDescriptor) -> str | None:
    """Why setting ``field`` on ``message`` would drop another choice, or None.

    A oneof keeps one member, and a plugin's extension message stands for a member of its
    holder's (first) oneof, so ``dssm {}`` then ``multi_tower {}`` -- or a built-in model
    plus ``[plugin.model]`` -- is two models where text format would keep the last.
    """
    oneofs = message.DESCRIPTOR.oneofs
    if field.containing_oneof is not None:
        oneof = field.containing_oneof
        other = message.WhichOneof(oneof.name)
        if other is None and oneof is oneofs[0] and message.DESCRIPTOR.is_extendable:
            other = _set_extension_choice(message, None)
    elif field.is_extension and field.message_type is not None and oneofs:
        oneof = oneofs[0]
        other = message.WhichOneof(oneof.name) or _set_extension_choice(message, field)
    else:
        return None
    if other is None or other == field.name:
        return None
    name = f"[{field.full_name}]" if field.is_extension else field.name
    rule = "a config holds one model" if oneof.name == "model" else f"'{oneof.name}' is one choice"
    return f"{message.DESCRIPTOR.name} sets both {other} and {name}, but {rule}; remove one"


def _set_extension_choice(message: Message, besides: FieldDescriptor | None) -> str | None:
    for fd, _ in message.ListFields():
        if fd.is_extension and fd.message_type is not None and fd is not besides:
            return f"[{fd.full_name}]"
    return None


def _first_choice_conflict(message: Message) -> str | None:
    """The first oneof/extension choice conflict anywhere in a parsed message (JSON input)."""
    desc = message.DESCRIPTOR
    if desc.is_extendable and desc.oneofs:
        chosen = message.WhichOneof(desc.oneofs[0].name)
        exts = [fd for fd, _ in message.ListFields() if fd.is_extension and fd.message_type]
        if exts and (chosen is not None or len(exts) > 1):
            holder = type(message)()
            if chosen is not None:
                getattr(holder, chosen).SetInParent()
            else:
                holder.Extensions[exts.pop(0)].SetInParent()
            return _choice_conflict(holder, exts[0])
    for fd, value in message.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        for item in value if fd.is_repeated else [value]:
            conflict = _first_choice_conflict(item)
            if conflict:
                return conflict
    return None


class _OneChoiceParser(text_format._Parser):  # noqa: SLF001 -- the merging parser, extended
    """Text format's merging parser that refuses a second member of a oneof.

    A repeated singular field still keeps its last value (upstream merges the same way);
    only a choice that would silently drop another one is an error.
    """

    def _MergeMessageField(self, tokenizer: Any, message: Message, field: FieldDescriptor):  # noqa: N802
        self._check_choice(tokenizer, message, field)
        return super()._MergeMessageField(tokenizer, message, field)

    def _MergeScalarField(self, tokenizer: Any, message: Message, field: FieldDescriptor):  # noqa: N802
        self._check_choice(tokenizer, message, field)
        return super()._MergeScalarField(tokenizer, message, field)

    @staticmethod
    def _check_choice(tokenizer: Any, message: Message, field: FieldDescriptor) -> None:
        conflict = _choice_conflict(message, field)
        if conflict:
            raise tokenizer.ParseErrorPreviousToken(conflict)


def load_pipeline_config(
    path: str | os.PathLike[str],
    allow_unknown_field: bool = False,
    edits: Mapping[str, Any] | None = None,
) -> pipeline_pb2.EasyRecConfig:
    """Load a pipeline config file (``.json`` is JSON, anything else text format).

    ``edits`` are ``--edit_config_json`` overrides applied after parsing.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: pipeline config not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read pipeline config: {e}") from None
    is_json = p.suffix == ".json" or text.lstrip().startswith("{")
    config = parse_pipeline_config(text, str(p), "json" if is_json else "text", allow_unknown_field)
    if edits:
        edit_config(config, edits)
    return config


def save_message(message: Message, path: str | os.PathLike[str]) -> None:
    """Write a message in text format atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = text_format.MessageToString(message, as_utf8=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_to_dict(message: Message) -> dict[str, Any]:
    """A message as a plain dict with proto field names (defaults included)."""
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
    )


def config_to_json(message: Message) -> str:
    """A message as indented JSON text."""
    return json.dumps(config_to_dict(message), indent=2)


# -- validation ------------------------------------------------------------------------


def which_oneof(message: Message, oneof: str) -> tuple[str, Message] | None:
    """The field name and value set in ``oneof``, or a plugin extension, or None.

    A plugin's config message lives in a proto2 extension of the holder message (field
    numbers 10000+), so it is found here exactly like a built-in oneof member.
    """
    name = message.WhichOneof(oneof)
    if name is not None:
        return name, getattr(message, name)
    for field, value in message.ListFields():
        if field.is_extension and field.type == FieldDescriptor.TYPE_MESSAGE:
            return field.name, value
    return None


def provided_by(message: Message, name: str) -> str | None:
    """The distribution the schema says implements oneof field ``name`` of ``message``."""
    from tzrec.protos import plugin_pb2

    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        return None
    opts = field.GetOptions()
    if opts.HasExtension(plugin_pb2.provided_by):
        return opts.Extensions[plugin_pb2.provided_by]
    return None


def oneof_choices(message: Message, oneof: str) -> list[str]:
    """The field names a ``oneof`` accepts (for "expected one of" messages)."""
    return [f.name for f in message.DESCRIPTOR.oneofs_by_name[oneof].fields]


def sequence_separator() -> str:
    """What joins a sequence name and a sub-feature name: upstream's ``_underline`` rule.

    ``__`` (``uih_seq__video_id``), or ``_`` when env ``USE_RTP=1`` (RTP-style names such
    as ``uih_seq_video_id``), exactly as upstream derives sub-feature names.
    """
    return "_" if os.environ.get("USE_RTP", "0") == "1" else "__"


def feature_names(config: pipeline_pb2.EasyRecConfig) -> dict[str, str]:
    """Every feature name a feature group may use, mapped to the config that defines it.

    Sequence sub-features are named ``<sequence_name>__<feature_name>`` (see
    :func:`sequence_separator`).
    """
    names: dict[str, str] = {}
    for i, fc in enumerate(config.feature_configs):
        chosen = which_oneof(fc, "feature")
        where = f"feature_configs[{i}]"
        if chosen is None:
            raise ConfigError(
                f"{where}: sets no feature type; expected one of "
                f"{', '.join(oneof_choices(fc, 'feature'))}"
            )
        kind, feat = chosen
        if kind == "sequence_feature":
            seq_name = feat.sequence_name
            for j, sub in enumerate(feat.features):
                sub_chosen = which_oneof(sub, "feature")
                if sub_chosen is None:
                    raise ConfigError(
                        f"{where}.sequence_feature.features[{j}]: sets no feature type"
                    )
                sub_name = f"{seq_name}{sequence_separator()}{sub_chosen[1].feature_name}"
                _add_name(names, sub_name, f"{where}.sequence_feature.features[{j}]")
        else:
            fname = getattr(feat, "feature_name", "")
            if not fname:
                raise ConfigError(f"{where}.{kind}: feature_name is required")
            _add_name(names, fname, f"{where}.{kind}")
    return names


def _add_name(names: dict[str, str], name: str, where: str) -> None:
    if name in names:
        raise ConfigError(f"{where}: feature name '{name}' is already defined by {names[name]}")
    names[name] = where


_INPUT_PATH_FIELDS = ("train_input_path", "eval_input_path", "model_dir")


def validate_pipeline_config(
    config: pipeline_pb2.EasyRecConfig,
    source: str = "<config>",
    require_input_paths: bool = True,
    allow_unsupported_fields: bool | None = None,
) -> None:
    """Check a config beyond what parsing checks; raise one-line ConfigErrors.

    Checks: required fields; every set field is honoured by an installed package and every
    declared size is positive (:func:`tzrec.core.support.check_supported_fields`;
    ``allow_unsupported_fields``, default ``TZREC_ALLOW_UNSUPPORTED_FIELDS``, warns instead);
    exactly one model; feature definitions and that every feature group names defined
    features with unique group names.
    """
    if require_input_paths:
        # Only the top-level paths: upstream configs routinely leave nested "required"
        # fields (e.g. a feature's fg ``expression``) unset, and upstream accepts them.
        missing = [f for f in _INPUT_PATH_FIELDS if not config.HasField(f)]
        if missing:
            raise ConfigError(f"{source}: missing required field(s): {', '.join(missing)}")
    check_supported_fields(config, source, allow_unsupported_fields)
    names = feature_names(config)
    mc = config.model_config
    if which_oneof(mc, "model") is None:
        raise ConfigError(
            f"{source}: model_config sets no model; expected one of "
            f"{', '.join(oneof_choices(mc, 'model'))} (or a plugin's model extension)"
        )
    groups: set[str] = set()
    for i, group in enumerate(mc.feature_groups):
        where = f"{source}: model_config.feature_groups[{i}] ({group.group_name!r})"
        if not group.group_name:
            raise ConfigError(f"{where}: group_name is required")
        if group.group_name in groups:
            raise ConfigError(f"{where}: group_name is used by another group")
        groups.add(group.group_name)
        refs = list(group.feature_names)
        for seq_group in group.sequence_groups:
            refs.extend(seq_group.feature_names)
        for ref in refs:
            if ref not in names:
                raise ConfigError(
                    f"{where}: feature '{ref}' is not defined in feature_configs"
                    f"{_suggest(ref, names)}{_rtp_hint(ref, config)}"
                )


def _rtp_hint(name: str, config: pipeline_pb2.EasyRecConfig) -> str:
    """A hint when ``name`` is a sequence sub-feature under the other naming rule."""
    if sequence_separator() == "_" or "__" in name:
        return ""
    for fc in config.feature_configs:
        chosen = which_oneof(fc, "feature")
        if chosen is not None and chosen[0] == "sequence_feature":
            seq = chosen[1]
            if any(
                name == f"{seq.sequence_name}_{which_oneof(sub, 'feature')[1].feature_name}"
                for sub in seq.features
                if which_oneof(sub, "feature")
            ):
                return "; RTP-style sub-feature names ('<sequence>_<feature>') need USE_RTP=1"
    return ""


def _suggest(name: str, known: Mapping[str, str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _apply_fg_compat(config: pipeline_pb2.EasyRecConfig, source: str) -> None:
    """Map upstream feature-generation settings onto tzrec's column-reading mode.

    FG_NONE reads fg-encoded columns; FG_DAG / FG_NORMAL are computed by tzrec-data from raw
    inputs (warned once: no pyfg is involved).
    """
    dc = config.data_config
    if not config.HasField("data_config"):
        return
    if dc.HasField("fg_encoded"):
        logger.warning("%s: data_config.fg_encoded is deprecated upstream; use fg_mode", source)
        if dc.fg_encoded:
            dc.fg_mode = data_pb2.FG_NONE
        else:
            dc.fg_mode = data_pb2.FG_DAG if dc.fg_threads > 0 else data_pb2.FG_NORMAL
    if dc.fg_mode != data_pb2.FG_NONE:
        logger.warning(
            "%s: data_config.fg_mode %s: tzrec-data generates the features from raw input "
            "columns with pyfg's semantics but without pyfg (docs/data.md lists what is "
            "checked against pyfg); FG_NONE reads fg-encoded columns instead",
            source,
            data_pb2.FgMode.Name(dc.fg_mode),
        )


def _one_line(msg: str) -> str:
    return " ".join(msg.split())
