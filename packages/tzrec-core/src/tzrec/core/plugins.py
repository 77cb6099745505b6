"""The tzrec plugin manager: loads ``tzrec`` entry points and keeps one registry per hook.

First-party packages (tzrec-data, tzrec-models, tzrec-hstu, ...) register through the same
entry points as third-party plugins; core itself never imports them. ``TZREC_LOAD_PLUGINS``
(comma-separated distribution or entry-point names; empty means none) restricts what loads.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from tzrec.core import hookspecs
from tzrec.core.errors import PluginError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tzrec"
LOAD_PLUGINS_ENV = "TZREC_LOAD_PLUGINS"
CORE_DISTRIBUTION = "tzrec-core"
#: A plugin module's attribute holding hook specs it defines (a class or module of
#: ``@hookspec`` functions); each ``register_<kind>`` spec there adds a registry kind.
HOOKSPECS_ATTR = "HOOKSPECS"

#: Registry kinds of tzrec-core's own hooks, one per ``register_<kind>`` hook, in display
#: order. Plugins add kinds of their own through ``HOOKSPECS`` (tzrec-hstu:
#: ``input_preprocessors``, ``output_postprocessors``).
KINDS: tuple[str, ...] = (
    "models",
    "samplers",
    "datasets",
    "sequence_encoders",
    "losses",
    "metrics",
    "exporters",
    "evaluators",
    "examples",
    "commands",
)

#: Singular nouns for error messages.
_NOUN = {
    "models": "model",
    "samplers": "sampler",
    "datasets": "dataset",
    "sequence_encoders": "sequence encoder",
    "losses": "loss",
    "metrics": "metric",
    "exporters": "exporter",
    "evaluators": "evaluator",
    "examples": "example",
    "commands": "command",
}


@dataclass
class Registration:
    """One name registered by one plugin: what it points to and where it came from."""

    kind: str
    name: str
    target: Any
    plugin: str
    distribution: str
    version: str
    _resolved: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """Return the registered object, importing a lazy ``"module:attr"`` on first use."""
        if self._resolved is not None:
            return self._resolved
        target = self.target
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as e:
                raise PluginError(
                    f"{_noun(self.kind)} '{self.name}' from {self.distribution} points to "
                    f"'{target}', which cannot be loaded: {type(e).__name__}: {e}"
                ) from e
            target = obj
        self._resolved = target
        return target


@dataclass
class PluginInfo:
    """A loaded plugin module and the distribution that ships it."""

    name: str
    distribution: str
    version: str
    module: Any


class PluginManager:
    """A pluggy manager for the ``tzrec`` project plus the registries its hooks fill."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._kinds: list[str] = list(KINDS)
        self._infos: dict[str, PluginInfo] = {}
        self._registry: dict[str, dict[str, Registration]] | None = None
        self._entry_points_loaded = False

    # -- loading -------------------------------------------------------------------------

    def add_plugin(
        self,
        module: Any,
        name: str,
        distribution: str = "<local>",
        version: str = "",
    ) -> None:
        """Register a plugin object directly (tests, notebooks); same rules as entry points."""
        if name in self._infos:
            other = self._infos[name]
            if other.module is module:
                return
            raise PluginError(
                f"plugin name '{name}' is used by both {other.distribution} and "
                f"{distribution}; uninstall one of them"
            )
        specs = getattr(module, HOOKSPECS_ATTR, None)
        if specs is not None:
            self._add_hookspecs(specs, name, distribution)
        self.pm.register(module, name=name)
        self._infos[name] = PluginInfo(name, distribution, version, module)
        self._registry = None

    def _add_hookspecs(self, specs: Any, name: str, distribution: str) -> None:
        """Add a plugin's own hook specs (``add_hookspecs``); ``register_<kind>`` adds a kind."""
        try:
            self.pm.add_hookspecs(specs)
        except Exception as e:
            raise PluginError(
                f"plugin '{name}' from {distribution} defines invalid hook specs "
                f"({HOOKSPECS_ATTR}): {type(e).__name__}: {e}"
            ) from e
        for attr in dir(specs):
            kind = attr.removeprefix("register_")
            if kind != attr and kind not in self._kinds and hasattr(self.pm.hook, attr):
                self._kinds.append(kind)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Registry kinds: tzrec-core's plus those loaded plugins define (loads plugins)."""
        self.load_entry_points()
        return tuple(self._kinds)

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin added with :meth:`add_plugin` (mainly for tests)."""
        info = self._infos.pop(name, None)
        if info is not None:
            self.pm.unregister(info.module)
            self._registry = None

    def load_entry_points(self) -> None:
        """Load every ``tzrec`` entry point allowed by ``TZREC_LOAD_PLUGINS``; idempotent."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        eps = _unique_entry_points(entry_points(group=ENTRY_POINT_GROUP))
        allowed = _allowed_plugins()
        if allowed is not None:
            known = {ep.name for ep in eps} | {_dist_name(ep) for ep in eps}
            unknown = sorted(allowed - known)
            if unknown:
                installed = ", ".join(sorted({_dist_name(ep) for ep in eps})) or "none"
                raise PluginError(
                    f"{LOAD_PLUGINS_ENV} names {', '.join(unknown)}, which no installed "
                    f"plugin matches (installed: {installed})"
                )
        for ep in eps:
            dist = _dist_name(ep)
            if (
                allowed is not None
                and dist != CORE_DISTRIBUTION
                and ep.name not in allowed
                and dist not in allowed
            ):
                continue
            try:
                module = ep.load()
            except Exception as e:  # a broken plugin must say which one it is
                raise PluginError(
                    f"plugin '{ep.name}' from {dist} failed to load ({ep.value}): "
                    f"{type(e).__name__}: {e}; set {LOAD_PLUGINS_ENV} to skip it"
                ) from e
            version = ep.dist.version if ep.dist is not None else ""
            self.add_plugin(module, ep.name, dist, version)

    # -- registries ----------------------------------------------------------------------

    def registry(self, kind: str) -> dict[str, Registration]:
        """All registrations of one kind, by name (loads entry points on first use)."""
        self.load_entry_points()
        if kind not in self._kinds:
            raise ValueError(f"unknown registry kind {kind!r}; expected one of {self._kinds}")
        if self._registry is None or kind not in self._registry:
            self._registry = self._collect()
        return self._registry[kind]

    def _collect(self) -> dict[str, dict[str, Registration]]:
        registry: dict[str, dict[str, Registration]] = {kind: {} for kind in self._kinds}
        for kind in self._kinds:
            caller = getattr(self.pm.hook, f"register_{kind}")
            # Call each implementation on its own so every name is attributed to the
            # distribution that registered it (needed for clear duplicate errors).
            for impl in caller.get_hookimpls():
                info = self._infos[impl.plugin_name]
                register = self._make_register(registry[kind], kind, info)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except PluginError:
                    raise
                except Exception as e:
                    raise PluginError(
                        f"plugin '{info.name}' from {info.distribution} failed in "
                        f"register_{kind}: {type(e).__name__}: {e}"
                    ) from e
        return registry

    @staticmethod
    def _make_register(
        table: dict[str, Registration], kind: str, info: PluginInfo
    ) -> Callable[[str, Any], None]:
        def register(name: str, obj: Any) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"plugin '{info.name}' from {info.distribution} registered a "
                    f"{_noun(kind)} with an invalid name {name!r}"
                )
            if name in table:
                other = table[name]
                raise PluginError(
                    f"{_noun(kind)} '{name}' is registered by both {other.distribution} "
                    f"(plugin '{other.plugin}') and {info.distribution} (plugin "
                    f"'{info.name}'); uninstall one or restrict {LOAD_PLUGINS_ENV}"
                )
            table[name] = Registration(kind, name, obj, info.name, info.distribution, info.version)

        return register

    def get(self, kind: str, name: str, provided_by: str | None = None) -> Any:
        """Return the object registered as ``name``, or raise a :class:`PluginError`.

        ``provided_by`` is the distribution that is known to provide ``name`` (from the
        config schema); it turns "not found" into an install instruction.
        """
        table = self.registry(kind)
        if name in table:
            return table[name].load()
        noun = _noun(kind)
        if provided_by:
            installed_version = _installed_version(provided_by)
            if installed_version is None:
                hint = f"pip install {provided_by}"
                if _allowed_plugins() is not None and _distribution_exists(provided_by):
                    hint = f"it is installed but {LOAD_PLUGINS_ENV} does not load it"
                raise PluginError(f"{noun} '{name}' is provided by {provided_by}: {hint}")
            raise PluginError(
                f"{noun} '{name}' is not implemented by the installed {provided_by} "
                f"{installed_version} (it provides {', '.join(sorted(table)) or 'no ' + kind}); "
                f"a newer {provided_by} may have it"
            )
        installed = ", ".join(sorted(table)) or "none"
        raise PluginError(
            f"no installed plugin provides {noun} '{name}' (installed {kind}: {installed})"
        )

    def supported_fields(self) -> list[tuple[str, PluginInfo]]:
        """Every ``(field name, plugin)`` the ``register_supported_fields`` hook declares."""
        self.load_entry_points()
        out: list[tuple[str, PluginInfo]] = []
        for impl in self.pm.hook.register_supported_fields.get_hookimpls():
            info = self._infos[impl.plugin_name]

            def declare(*names: str, info: PluginInfo = info) -> None:
                for name in names:
                    if not isinstance(name, str) or not name:
                        raise PluginError(
                            f"plugin '{info.name}' from {info.distribution} declared an "
                            f"invalid config field name {name!r}"
                        )
                    out.append((name, info))

            try:
                impl.function(**{arg: declare for arg in impl.argnames})
            except PluginError:
                raise
            except Exception as e:
                raise PluginError(
                    f"plugin '{info.name}' from {info.distribution} failed in "
                    f"register_supported_fields: {type(e).__name__}: {e}"
                ) from e
        return out

    def plugins(self) -> list[PluginInfo]:
        """Loaded plugins in load order."""
        self.load_entry_points()
        return list(self._infos.values())

    def describe(self) -> list[dict[str, Any]]:
        """Installed plugins, their versions and what each registers (``tzrec plugins``)."""
        self.load_entry_points()
        by_plugin: dict[str, dict[str, list[str]]] = {name: {} for name in self._infos}
        for kind in self._kinds:
            for name, reg in self.registry(kind).items():
                by_plugin[reg.plugin].setdefault(kind, []).append(name)
        rows = []
        for info in self._infos.values():
            hooks = sorted(
                impl_name
                for impl_name in (f"register_{k}" for k in self._kinds)
                if any(
                    impl.plugin_name == info.name
                    for impl in getattr(self.pm.hook, impl_name).get_hookimpls()
                )
            )
            rows.append(
                {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "hooks": hooks,
                    "registers": {k: sorted(v) for k, v in by_plugin[info.name].items()},
                }
            )
        return rows


def _noun(kind: str) -> str:
    """The singular noun of a registry kind for messages (``input_preprocessors`` -> ...)."""
    return _NOUN.get(kind) or kind.removesuffix("s").replace("_", " ")


def _installed_version(distribution: str) -> str | None:
    """The installed version of a distribution whose plugin is loaded, else None."""
    from importlib.metadata import PackageNotFoundError, version

    manager = get_plugin_manager()
    if not any(p.distribution == distribution for p in manager.plugins()):
        return None
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _distribution_exists(distribution: str) -> bool:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import distribution as dist

    try:
        dist(distribution)
    except PackageNotFoundError:
        return False
    return True


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "<unknown>"


def _unique_entry_points(eps: Iterable[EntryPoint]) -> list[EntryPoint]:
    """Drop exact duplicates (same dist, name and value) that some installs expose twice."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in eps:
        key = (_dist_name(ep), ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return out


def _allowed_plugins() -> set[str] | None:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugin_manager() -> None:
    """Forget loaded plugins so the next call reloads them (tests, env changes)."""
    global _manager
    _manager = None


def load_plugins() -> PluginManager:
    """Load installed plugins (idempotent) and return the manager."""
    manager = get_plugin_manager()
    manager.load_entry_points()
    return manager


def get(kind: str, name: str, provided_by: str | None = None) -> Any:
    """Shortcut for ``get_plugin_manager().get(...)``."""
    return get_plugin_manager().get(kind, name, provided_by)
