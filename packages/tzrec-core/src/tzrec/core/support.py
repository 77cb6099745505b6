"""Which pipeline-config fields the installed packages honour, and the walk that checks a config.

Every package (first- or third-party) declares the fields it reads through the
``register_supported_fields`` hook (a plain list next to its other registrations). At
validation every field a config sets (``ListFields``, recursively, plugin extensions
included) is looked up: a set field that no installed package declares is refused in one
line naming its path and the package that would have to implement it, so nothing in a
config is silently ignored. ``--allow_unsupported_fields`` (or
``TZREC_ALLOW_UNSUPPORTED_FIELDS=1``) turns the refusal into one warning per field.
Declarations ending in ``>0`` also require a set value to be positive (sizes, counts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tzrec.core.errors import ConfigError, PluginError

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOW_UNSUPPORTED_ENV",
    "ALLOW_UNSUPPORTED_FLAG",
    "FieldSupport",
    "Finding",
    "check_supported_fields",
    "field_support",
    "walk_config",
]

ALLOW_UNSUPPORTED_ENV = "TZREC_ALLOW_UNSUPPORTED_FIELDS"
ALLOW_UNSUPPORTED_FLAG = "--allow_unsupported_fields"
_PROTO_PACKAGE = "tzrec.protos."
_POSITIVE_SUFFIX = ">0"
_MORE = 3  # unsupported paths listed after the first in one error line


@dataclass(frozen=True)
class Provider:
    """A distribution (and its version) that declares a field."""

    distribution: str
    version: str = ""

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}".strip()


@dataclass
class FieldSupport:
    """The resolved declarations of every installed plugin."""

    #: field full name (``tzrec.protos.TrainConfig.num_steps``) -> declaring distributions
    fields: dict[str, list[Provider]] = field(default_factory=dict)
    #: message full name -> distributions declaring all of its fields (``Message.*``)
    messages: dict[str, list[Provider]] = field(default_factory=dict)
    #: field full names whose set values must be > 0
    positive: set[str] = field(default_factory=set)
    #: message full name -> distributions declaring at least one of its fields
    owners: dict[str, list[Provider]] = field(default_factory=dict)
    #: every loaded distribution, in load order
    installed: list[Provider] = field(default_factory=list)

    def providers(self, fd: FieldDescriptor) -> list[Provider]:
        """The distributions that honour field ``fd`` (empty: nothing does)."""
        return self.fields.get(fd.full_name) or self.messages.get(fd.containing_type.full_name, [])

    @classmethod
    def from_declarations(
        cls, declarations: Iterable[tuple[str, str, Provider]], installed: Iterable[Provider] = ()
    ) -> FieldSupport:
        """Resolve ``(name, plugin name, provider)`` declarations against the proto schema.

        Raises:
            PluginError: a declared name is not a field (or ``Message.*``) of any loaded proto.
        """
        support = cls(installed=list(installed))
        pool = descriptor_pool.Default()
        for raw, plugin, provider in declarations:
            name = raw.strip()
            positive = name.endswith(_POSITIVE_SUFFIX)
            if positive:
                name = name[: -len(_POSITIVE_SUFFIX)].rstrip()
            target = _resolve(pool, name)
            if target is None:
                raise PluginError(
                    f"plugin '{plugin}' from {provider.distribution} declares config field "
                    f"'{raw}', which no loaded proto defines (expected <Message>.<field> or "
                    "<Message>.*)"
                )
            if isinstance(target, Descriptor):
                if positive:
                    raise PluginError(
                        f"plugin '{plugin}' from {provider.distribution} declares '{raw}': "
                        "'>0' applies to one field, not to <Message>.*"
                    )
                _add(support.messages, target.full_name, provider)
                _add(support.owners, target.full_name, provider)
                continue
            _add(support.fields, target.full_name, provider)
            if not target.is_extension:
                _add(support.owners, target.containing_type.full_name, provider)
            if positive:
                if target.cpp_type not in _NUMERIC:
                    raise PluginError(
                        f"plugin '{plugin}' from {provider.distribution} declares '{raw}': "
                        "'>0' needs a numeric field"
                    )
                support.positive.add(target.full_name)
        return support


_NUMERIC = {
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_UINT64,
    FieldDescriptor.CPPTYPE_FLOAT,
    FieldDescriptor.CPPTYPE_DOUBLE,
}


def _add(table: dict[str, list[Provider]], key: str, provider: Provider) -> None:
    providers = table.setdefault(key, [])
    if provider not in providers:
        providers.append(provider)


def _resolve(pool: Any, name: str) -> FieldDescriptor | Descriptor | None:
    """The field (or, for ``Message.*``, the message) a declaration names."""
    candidates = [name] if name.startswith(_PROTO_PACKAGE) else [_PROTO_PACKAGE + name, name]
    for full in candidates:
        if full.endswith(".*"):
            try:
                return pool.FindMessageTypeByName(full[:-2])
            except KeyError:
                continue
        for find in (pool.FindFieldByName, pool.FindExtensionByName):
            try:
                return find(full)
            except KeyError:
                pass
    return None


def field_support() -> FieldSupport:
    """The declarations of every loaded plugin, resolved (loads plugins on first use)."""
    from tzrec.core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    declarations = [
        (name, info.name, Provider(info.distribution, info.version))
        for name, info in manager.supported_fields()
    ]
    installed = [Provider(p.distribution, p.version) for p in manager.plugins()]
    return FieldSupport.from_declarations(declarations, installed)


@dataclass(frozen=True)
class Finding:
    """One problem the walk found.

    ``kind`` is ``"unsupported"`` (nothing honours the field), ``"invalid"`` (a size that
    is not positive) or ``"provider_missing"`` (a choice whose package is not installed).
    """

    kind: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def walk_config(message: Message, support: FieldSupport, path: str = "") -> Iterator[Finding]:
    """Every set field of ``message`` that nothing honours, and every out-of-range size.

    The walk does not descend into an unsupported field (its whole subtree is refused with it).
    """
    yield from _walk(message, support, path, [])


def _walk(
    message: Message, support: FieldSupport, path: str, owners: list[Provider]
) -> Iterator[Finding]:
    owners = support.owners.get(message.DESCRIPTOR.full_name) or owners
    for fd, value in message.ListFields():
        name = f"[{fd.full_name}]" if fd.is_extension else fd.name
        where = f"{path}.{name}" if path else name
        if not support.providers(fd):
            if _provider_missing(fd, support):
                # A registry choice (model, sampler, ...) whose package is not installed:
                # resolving it through the plugin manager says what to install.
                yield Finding("provider_missing", where, f"provided by {_provided_by(fd)}")
                continue
            yield Finding("unsupported", where, _why_unsupported(fd, support, owners))
            continue
        if fd.full_name in support.positive:
            values = list(value) if fd.is_repeated else [value]
            bad = [v for v in values if not v > 0]
            if bad:
                got = bad[0] if not fd.is_repeated else list(values)
                yield Finding("invalid", where, f"must be > 0, got {got}")
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        if fd.is_repeated:
            for i, item in enumerate(value):
                yield from _walk(item, support, f"{where}[{i}]", owners)
        else:
            yield from _walk(value, support, where, owners)


def _provided_by(fd: FieldDescriptor) -> str | None:
    from tzrec.protos import plugin_pb2

    opts = fd.GetOptions()
    if opts.HasExtension(plugin_pb2.provided_by):
        return opts.Extensions[plugin_pb2.provided_by]
    return None


def _provider_missing(fd: FieldDescriptor, support: FieldSupport) -> bool:
    dist = _provided_by(fd)
    return dist is not None and all(p.distribution != dist for p in support.installed)


def _why_unsupported(fd: FieldDescriptor, support: FieldSupport, owners: list[Provider]) -> str:
    dist = _provided_by(fd)
    installed = [p for p in support.installed if p.distribution == dist]
    if installed:
        return f"not supported by {installed[0]}"
    if fd.is_extension:
        return (
            f"extension from proto package '{fd.file.package}' that no installed plugin "
            "declares (its plugin must list it in register_supported_fields)"
        )
    if owners:
        return f"not supported by {' / '.join(str(p) for p in owners)}"
    installed = ", ".join(str(p) for p in support.installed) or "none"
    return f"not supported by any installed tzrec package (installed: {installed})"


def allow_unsupported_from_env() -> bool:
    """Whether ``TZREC_ALLOW_UNSUPPORTED_FIELDS`` asks for warnings instead of errors."""
    return os.environ.get(ALLOW_UNSUPPORTED_ENV, "").strip().lower() in ("1", "true", "yes")


def check_supported_fields(
    config: Message,
    source: str = "<config>",
    allow_unsupported: bool | None = None,
    support: FieldSupport | None = None,
) -> list[Finding]:
    """Refuse set fields nothing implements and sizes that are not positive, in one line.

    ``allow_unsupported`` (default: ``TZREC_ALLOW_UNSUPPORTED_FIELDS``) logs one warning per
    unsupported field instead; out-of-range sizes are always errors.

    Returns:
        The unsupported fields that were only warned about.

    Raises:
        ConfigError: naming the first field (and how many more) that cannot be honoured.
    """
    if allow_unsupported is None:
        allow_unsupported = allow_unsupported_from_env()
    findings = list(walk_config(config, support or field_support()))
    if any(f.kind == "provider_missing" for f in findings):
        # The config needs a package that is not installed: the plugin lookup that follows
        # says which one; what else that package would honour is unknown until then.
        return []
    invalid = [f for f in findings if f.kind == "invalid"]
    unsupported = [f for f in findings if f.kind == "unsupported"]
    if invalid:
        raise ConfigError(f"{source}: {_summary(invalid)}")
    if unsupported and not allow_unsupported:
        raise ConfigError(
            f"{source}: {_summary(unsupported)}; remove it, or pass {ALLOW_UNSUPPORTED_FLAG} "
            f"(or set {ALLOW_UNSUPPORTED_ENV}=1) to run without it"
        )
    for finding in unsupported:
        logger.warning("%s: %s (ignored: %s)", source, finding, ALLOW_UNSUPPORTED_FLAG)
    return unsupported


def _summary(findings: list[Finding]) -> str:
    first, rest = findings[0], findings[1:]
    if not rest:
        return str(first)
    listed = ", ".join(f.path for f in rest[:_MORE])
    more = f" and {len(rest) - _MORE} more" if len(rest) > _MORE else ""
    return f"{first} (also: {listed}{more})"
