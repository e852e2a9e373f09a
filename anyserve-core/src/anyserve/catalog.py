"""Name -> record maps built from the registration hooks, and selection by name.

Core, never the plugins, turns configuration into implementations: the
catalog calls each plugin's registration hook separately (through
:meth:`~anyserve.plugins.PluginManager.registrations`) so every record is
attributed to its plugin, duplicate names are reported with both sources, a
hook that raises is reported by plugin name, and an unknown name lists what
is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from anyserve.config import Settings
from anyserve.errors import ConfigError
from anyserve.plugins import PluginManager, get_plugin_manager
from anyserve.records import MatcherSpec, ObjectBackendSpec, RoutingStageSpec, StreamEncodingSpec, TransportSpec

R = TypeVar("R")


@dataclass(frozen=True)
class Category:
    """A kind of plugin contribution that configuration selects by name."""

    key: str  # also the configuration table
    title: str
    hook: str
    record_type: type


TRANSPORT = Category("transport", "IPC transport", "anyserve_register_transports", TransportSpec)
OBJECTS = Category("objects", "object backend", "anyserve_register_object_backends", ObjectBackendSpec)
ENCODING = Category("encoding", "stream encoding", "anyserve_register_stream_encodings", StreamEncodingSpec)
MATCHER = Category("matcher", "capability matcher", "anyserve_register_matchers", MatcherSpec)
ROUTING = Category("routing", "routing stage", "anyserve_register_routing", RoutingStageSpec)
CATEGORIES = (TRANSPORT, OBJECTS, ENCODING, MATCHER, ROUTING)

#: Decision hooks: the first implementation that answers wins.
#: ``link.name`` that turns the router -> replica link off (gRPC only).
LINK_OFF = "off"
DECISION_HOOKS = {"routing": "anyserve_select_target", "delegation": "anyserve_delegate"}

INSTALL_HINT = (
    "install a plugin that provides it (pip install anyserve-<kind>-<name>) and check `anyserve plugins list`"
)


@dataclass
class Registry(Generic[R]):
    """The records of one category, each with the plugin that contributed it."""

    category: Category
    records: dict[str, R] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    #: name -> every plugin that registered it, for names registered more than once.
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.records)

    def get(self, name: str) -> R:
        if name in self.conflicts:
            owners = " and ".join(f"plugin {p!r}" for p in self.conflicts[name])
            raise ConfigError(
                f"{self.category.title} {name!r} is registered twice: by {owners}; "
                f"uninstall one or disable it with ANYSERVE_DISABLE_PLUGINS"
            )
        if name not in self.records:
            installed = ", ".join(self.names()) or "none"
            raise ConfigError(
                f"no {self.category.title} named {name!r} is installed; installed: {installed}. "
                f"To use {name!r}, {INSTALL_HINT}."
            )
        return self.records[name]


class Catalog:
    """Everything the installed plugins contribute, ready to be selected from."""

    def __init__(self, pm: PluginManager | None = None) -> None:
        self.pm = pm or get_plugin_manager()
        self.registries: dict[str, Registry[Any]] = {c.key: self._collect(c) for c in CATEGORIES}

    def _collect(self, category: Category) -> Registry[Any]:
        registry: Registry[Any] = Registry(category)
        for plugin_name, records in self.pm.registrations(category.hook, category.record_type):
            for record in records:
                if record.name in registry.records:
                    # Listing keeps working; selecting this name is the error.
                    first = registry.owners[record.name]
                    registry.conflicts.setdefault(record.name, [first]).append(plugin_name)
                    self.pm.record_failure(
                        plugin_name, f"{category.title} {record.name!r} is already registered by plugin {first!r}"
                    )
                    continue
                registry.records[record.name] = record
                registry.owners[record.name] = plugin_name
        return registry

    # -- selection ---------------------------------------------------------

    def transport(self, settings: Settings) -> TransportSpec:
        return self.registries[TRANSPORT.key].get(settings.transport.name)

    def link(self, settings: Settings) -> TransportSpec | None:
        """The router -> replica link transport, or ``None`` for gRPC only.

        ``None`` also when the default (``tcp``) is not installed: a plain
        ``anyserve-core`` install still routes, over gRPC. A name configured
        explicitly must exist and be a network transport.
        """
        name = settings.link.name
        if name == LINK_OFF:
            return None
        registry: Registry[TransportSpec] = self.registries[TRANSPORT.key]
        if name not in registry.records and settings.source_of("link.name") == "default":
            return None
        spec = registry.get(name)
        if not spec.network:
            networked = ", ".join(n for n, r in sorted(registry.records.items()) if r.network) or "none installed"
            raise ConfigError(
                f"link.name = {name!r} is not a network transport and cannot link the router to replicas; "
                f"use one of: {networked}, or {LINK_OFF!r} for gRPC"
            )
        return spec

    def encoding(self, settings: Settings) -> StreamEncodingSpec:
        return self.registries[ENCODING.key].get(settings.encoding.name)

    def matcher(self, settings: Settings) -> MatcherSpec:
        return self.registries[MATCHER.key].get(settings.matcher.name)

    def routing_stage(self, name: str) -> RoutingStageSpec:
        return self.registries[ROUTING.key].get(name)

    def routing_stage_names(self, kind: str) -> list[str]:
        """The installed routing stages of one kind (``filter``, ``scorer``, ``picker``)."""
        return [n for n, r in sorted(self.registries[ROUTING.key].records.items()) if r.kind == kind]

    def object_backend(self, url: str) -> ObjectBackendSpec:
        """The backend claiming ``url``'s scheme; a plain path means ``file``."""
        scheme = urlsplit(url).scheme or "file"
        registry: Registry[ObjectBackendSpec] = self.registries[OBJECTS.key]
        for record in registry.records.values():
            if scheme in record.schemes:
                return record
        schemes = sorted(f"{s}:// ({r.name})" for r in registry.records.values() for s in r.schemes)
        raise ConfigError(
            f"no object backend handles {scheme}:// (objects.url = {url!r}); installed: "
            f"{', '.join(schemes) or 'none'}. For file:// install anyserve-objects-fs; otherwise {INSTALL_HINT}."
        )

    def scheme_owners(self) -> dict[str, str]:
        """scheme -> backend name, for listings."""
        return {s: r.name for r in self.registries[OBJECTS.key].records.values() for s in r.schemes}

    def _pipeline_selected(self, settings: Settings) -> dict[str, dict[str, Any]]:
        """The routing pipeline's three settings, each stage with the plugin that contributes it."""
        routing = settings.routing
        registry: Registry[RoutingStageSpec] = self.registries[ROUTING.key]
        rows = {
            "routing.filters": (", ".join(routing.filters), list(routing.filters)),
            "routing.scorers": (
                ", ".join(f"{name}={weight:g}" for name, weight in routing.scorers.items()),
                [name for name, weight in routing.scorers.items() if weight],
            ),
            "routing.picker": (routing.picker, [routing.picker]),
        }
        out: dict[str, dict[str, Any]] = {}
        for setting, (value, names) in rows.items():
            entry: dict[str, Any] = {"setting": setting, "value": value, "source": settings.source_of(setting)}
            try:
                entry["selected"] = ", ".join(f"{n} ({registry.owners[registry.get(n).name]})" for n in names) or "-"
            except ConfigError as exc:
                entry["selected"] = None
                entry["error"] = str(exc)
            out[setting] = entry
        return out

    def decision_order(self, hook: str) -> list[str]:
        """Plugins implementing a decision hook, in the order they are asked."""
        return self.pm.impl_names(hook)

    def selected(self, settings: Settings) -> dict[str, dict[str, Any]]:
        """Per category: what the configuration selects, where it came from, any error."""
        out: dict[str, dict[str, Any]] = {}
        picks: dict[str, tuple[str, str, Callable[[], Any]]] = {
            TRANSPORT.key: ("transport.name", settings.transport.name, lambda: self.transport(settings)),
            "link": ("link.name", settings.link.name, lambda: self.link(settings)),
            OBJECTS.key: ("objects.url", settings.objects.url, lambda: self.object_backend(settings.objects.url)),
            ENCODING.key: ("encoding.name", settings.encoding.name, lambda: self.encoding(settings)),
            MATCHER.key: ("matcher.name", settings.matcher.name, lambda: self.matcher(settings)),
        }
        for key, (setting, value, resolve) in picks.items():
            entry: dict[str, Any] = {"setting": setting, "value": value, "source": settings.source_of(setting)}
            try:
                record = resolve()
                if record is None:  # the link is off: gRPC
                    entry["selected"] = "grpc"
                    out[key] = entry
                    continue
                entry["selected"] = record.name
                entry["plugin"] = self.registries[TRANSPORT.key if key == "link" else key].owners[record.name]
            except ConfigError as exc:
                entry["selected"] = None
                entry["error"] = str(exc)
            out[key] = entry
        out.update(self._pipeline_selected(settings))
        for key, hook in DECISION_HOOKS.items():
            order = self.decision_order(hook)
            out[key] = {"setting": None, "selected": order[0] if order else None, "order": order}
        out["router"] = {
            "setting": "router.url",
            "value": settings.router.url,
            "source": settings.source_of("router.url"),
        }
        return out
