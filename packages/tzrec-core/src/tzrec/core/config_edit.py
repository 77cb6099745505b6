"""``--edit_config_json``: override config fields by path, with TorchEasyRec's syntax.

A key is a dotted path; a repeated field takes a selector in brackets::

    train_config.num_epochs                              plain field
    feature_configs[0].id_feature.embedding_dim          list index (negative allowed)
    feature_configs[:].id_feature.embedding_dim          every element ([1:3] a range)
    feature_configs[feature_name=user_id].id_feature...  elements whose field matches
    model_config.feature_groups[group_name=uih].feature_names

Conditions support ``=``, ``>=``, ``<=``, ``>``, ``<`` and may name a nested field.
A name that is not a field of a message but of the member set in one of its oneofs is
looked up there (``feature_configs[feature_name=x]`` looks inside ``id_feature``).
Several fields can be set at once with ``"a;b": "1;2"``. Values are converted to the
field's type; enums are given by name; messages by text format or a JSON object.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tzrec.core.errors import ConfigError

_OPS: list[tuple[str, Callable[[Any, Any], bool]]] = [
    (">=", operator.ge),
    ("<=", operator.le),
    (">", operator.gt),
    ("<", operator.lt),
    ("=", operator.eq),
]

_TOKEN = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<sel>[^\]]*)\])?$")


class _EditError(Exception):
    """Internal: a problem with one key; turned into a ConfigError naming the key."""


def edit_config(config: Message, edits: Mapping[str, Any]) -> Message:
    """Apply ``--edit_config_json`` style overrides to ``config`` in place and return it."""
    for raw_key, raw_value in edits.items():
        keys = [k.strip() for k in str(raw_key).split(";")]
        if len(keys) > 1:
            values: list[Any] = [v.strip() for v in str(raw_value).split(";")]
            if len(values) != len(keys):
                raise ConfigError(
                    f"edit_config_json key '{raw_key}': {len(keys)} keys but "
                    f"{len(values)} ';'-separated values"
                )
        else:
            values = [raw_value]
        for key, value in zip(keys, values, strict=True):
            try:
                _apply(config, key, value)
            except _EditError as e:
                raise ConfigError(f"edit_config_json key '{key}': {e}") from None
    return config


def _split_path(path: str) -> list[str]:
    """Split on dots that are not inside brackets."""
    parts, depth, cur = [], 0, []
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    if any(not p for p in parts) or depth != 0:
        raise _EditError("malformed path (empty segment or unbalanced brackets)")
    return parts


def _field(msg: Message, name: str) -> tuple[Message, FieldDescriptor]:
    """Find field ``name`` on ``msg`` or on the member set in one of its oneofs."""
    desc = msg.DESCRIPTOR
    if name in desc.fields_by_name:
        return msg, desc.fields_by_name[name]
    for oneof in desc.oneofs:
        chosen = msg.WhichOneof(oneof.name)
        if chosen is not None:
            child = getattr(msg, chosen)
            if isinstance(child, Message) and name in child.DESCRIPTOR.fields_by_name:
                return child, child.DESCRIPTOR.fields_by_name[name]
    fields = ", ".join(sorted(desc.fields_by_name)) or "none"
    raise _EditError(f"{desc.name} has no field '{name}' (fields: {fields})")


# A slot is where a value can be written: (message, field, index into repeated or None).
_Slot = tuple[Message, FieldDescriptor, int | None]


def _select(msg: Message, token: str) -> list[_Slot]:
    m = _TOKEN.match(token)
    if not m:
        raise _EditError(f"malformed path segment '{token}'")
    owner, field = _field(msg, m["name"])
    sel = m["sel"]
    repeated = field.is_repeated
    if sel is None:
        return [(owner, field, None)]
    if not repeated:
        raise _EditError(f"'{field.name}' is not a repeated field; remove '[{sel}]'")
    items = getattr(owner, field.name)
    n = len(items)
    sel = sel.strip()
    if ":" in sel and not any(op in sel for op, _ in _OPS):
        lo, _, hi = sel.partition(":")
        try:
            rng = range(n)[slice(int(lo) if lo else None, int(hi) if hi else None)]
        except ValueError:
            raise _EditError(f"bad range '[{sel}]'") from None
        return [(owner, field, i) for i in rng]
    try:
        idx = int(sel)
    except ValueError:
        return [(owner, field, i) for i in _match(items, field, sel)]
    if not -n <= idx < n:
        raise _EditError(f"index [{idx}] out of range: '{field.name}' has {n} elements")
    return [(owner, field, idx % n)]


def _match(items: Any, field: FieldDescriptor, cond: str) -> list[int]:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        raise _EditError(f"condition '[{cond}]' needs a repeated message field")
    lhs_field = field.message_type.fields_by_name.get(cond.split("=")[0].strip("<>! "))
    if lhs_field is not None and lhs_field.is_repeated:
        raise _EditError(f"condition '[{cond}]' compares a repeated field; use a scalar field")
    for op, op_fn in _OPS:
        pos = cond.find(op)
        if pos > 0:
            lhs, rhs = cond[:pos].strip(), cond[pos + len(op) :].strip()
            fn = op_fn
            break
    else:
        raise _EditError(f"bad selector '[{cond}]': expected an index, a range or a=b")
    hits = []
    for i, item in enumerate(items):
        try:
            slots = _resolve(item, _split_path(lhs))
        except _EditError:
            continue
        for owner, f, idx in slots:
            current = getattr(owner, f.name) if idx is None else getattr(owner, f.name)[idx]
            if fn(current, _convert(f, owner, rhs)):
                hits.append(i)
                break
    if not hits:
        raise _EditError(f"selector '[{cond}]' matches no element of '{field.name}'")
    return hits


def _resolve(root: Message, tokens: list[str]) -> list[_Slot]:
    objs = [root]
    for pos, token in enumerate(tokens):
        slots = [slot for obj in objs for slot in _select(obj, token)]
        if pos == len(tokens) - 1:
            return slots
        objs = []
        for owner, field, idx in slots:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                raise _EditError(f"'{field.name}' is not a message; cannot descend")
            value = getattr(owner, field.name)
            if field.is_repeated:
                if idx is None:
                    raise _EditError(
                        f"'{field.name}' is repeated; select elements with "
                        f"'{field.name}[0]', '[:]' or '[name=value]'"
                    )
                value = value[idx]
            objs.append(value)
    return []


def _apply(config: Message, key: str, value: Any) -> None:
    for owner, field, idx in _resolve(config, _split_path(key)):
        try:
            _assign(owner, field, idx, value)
        except (ValueError, TypeError) as e:  # protobuf range checks, malformed lists
            raise _EditError(
                f"{value!r} is not valid for field '{field.name}': {' '.join(str(e).split())}"
            ) from None


def _assign(owner: Message, field: FieldDescriptor, idx: int | None, value: Any) -> None:
    repeated = field.is_repeated
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if repeated and idx is None:
            container = getattr(owner, field.name)
            del container[:]
            for item in value if isinstance(value, list) else [value]:
                _fill_message(container.add(), item)
            return
        target = getattr(owner, field.name)
        target = target[idx] if idx is not None else target
        target.Clear()
        _fill_message(target, value)
        if idx is None:
            target.SetInParent()
        return
    if repeated and idx is None:
        container = getattr(owner, field.name)
        items = _parse_list(field, value)
        del container[:]
        container.extend(_convert(field, owner, v) for v in items)
        return
    converted = _convert(field, owner, value)
    if idx is None:
        setattr(owner, field.name, converted)
    else:
        getattr(owner, field.name)[idx] = converted


def _fill_message(target: Message, value: Any) -> None:
    try:
        if isinstance(value, dict):
            json_format.ParseDict(value, target)
            return
        text = str(value).strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                json_format.Parse(text, target)
                return
            except json_format.ParseError:
                text = text[1:-1]
        text_format.Parse(text, target)
    except (json_format.ParseError, text_format.ParseError) as e:
        raise _EditError(
            f"value is not a valid {target.DESCRIPTOR.name}: {' '.join(str(e).split())}"
        ) from None


def _parse_list(field: FieldDescriptor, value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = json.loads(text.replace("'", '"'))
        if not isinstance(parsed, list):
            raise _EditError(f"expected a list for repeated field '{field.name}'")
        return parsed
    return [p.strip() for p in text.split(",")] if "," in text else [text]


_INT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}


def _convert(field: FieldDescriptor, owner: Message, value: Any) -> Any:
    """Convert ``value`` to the Python type of ``field`` or explain what was expected."""
    t = field.type
    try:
        if t == FieldDescriptor.TYPE_BOOL:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1"):
                return True
            if text in ("false", "0"):
                return False
            raise ValueError
        if t in _INT_TYPES:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if not isinstance(value, int | float) else int(value)
        if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return float(value)
        if t == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            if isinstance(value, int) and not isinstance(value, bool):
                if value in enum.values_by_number:
                    return value
                raise ValueError
            name = str(value).strip()
            if name in enum.values_by_name:
                return enum.values_by_name[name].number
            raise _EditError(
                f"'{value}' is not a {enum.name} value for '{field.name}'; expected one "
                f"of {', '.join(enum.values_by_name)}"
            )
        if t == FieldDescriptor.TYPE_STRING:
            return str(value)
        if t == FieldDescriptor.TYPE_BYTES:
            return str(value).encode()
    except (TypeError, ValueError):
        pass
    kind = {
        FieldDescriptor.TYPE_BOOL: "a bool (true/false)",
        FieldDescriptor.TYPE_FLOAT: "a number",
        FieldDescriptor.TYPE_DOUBLE: "a number",
    }.get(t, "an integer")
    raise _EditError(f"'{value}' is not {kind} for field '{field.name}'")
