"""What each plugin is and what it contributes, as data.

``anyserve plugins list`` renders this as tables or JSON. It is gathered
from core's own bookkeeping (``pm.origins``, ``pm.failures``, the catalog's
owners) so the listing shows exactly what a replica would use, never a
second opinion of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from anyserve import AnyServe
from anyserve.catalog import OBJECTS, ROUTING, Catalog
from anyserve.plugins import DEFAULT_PLUGINS, PerImpl, PluginManager

CAPABILITIES_HOOK = "anyserve_register_capabilities"

#: catalog category key -> key under a plugin's ``contributes``.
CATEGORY_KEYS = {
    "transport": "transports",
    "objects": "object_backends",
    "encoding": "stream_encodings",
    "matcher": "matchers",
    "routing": "routing_stages",
}
CONTRIBUTION_KEYS = (*CATEGORY_KEYS.values(), "commands", "capabilities")

_BUILTIN_NAMES = {module.rsplit(".", 1)[-1] for module in DEFAULT_PLUGINS}


@dataclass
class PluginReport:
    """One row of ``anyserve plugins list``; :meth:`to_json` is the ``--json`` form."""

    name: str
    distribution: str
    version: str
    status: str  # "ok", "error" or "disabled"
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    contributes: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in CONTRIBUTION_KEYS})
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def collect_capabilities(pm: PluginManager) -> dict[str, list[dict[str, Any]]]:
    """plugin name -> the capabilities its ``anyserve_register_capabilities`` adds.

    Each implementation gets an application of its own (a replica hands all
    of them the same one), so every handler is attributed to the plugin that
    added it; what a plugin added before its hook raised is listed too,
    because a replica would serve it. The raise itself lands in
    ``pm.failures``.
    """
    out: dict[str, list[dict[str, Any]]] = {}

    def keep(plugin_name: str, app: AnyServe) -> None:
        offers = [h.describe() for h in app.handlers] + [o for w in app.worker_classes for o in w.describe()]
        if offers:
            out.setdefault(plugin_name, []).extend(offers)

    for _ in pm.each_impl(CAPABILITIES_HOOK, app=PerImpl(lambda name: AnyServe(name=name), keep)):
        pass
    return out


def _contributions(catalog: Catalog) -> dict[str, dict[str, list[Any]]]:
    """plugin name -> {contribution key -> names}, from the catalog's owners."""
    out: dict[str, dict[str, list[Any]]] = {}
    for category, key in CATEGORY_KEYS.items():
        registry = catalog.registries[category]
        for record_name, plugin_name in registry.owners.items():
            item: Any = record_name
            if category == OBJECTS.key:
                item = {"name": record_name, "schemes": list(registry.records[record_name].schemes)}
            elif category == ROUTING.key:
                item = {"name": record_name, "kind": registry.records[record_name].kind}
            out.setdefault(plugin_name, {}).setdefault(key, []).append(item)
    return out


def build_inventory(
    pm: PluginManager,
    catalog: Catalog,
    commands: Mapping[str, list[str]],
    capabilities: Mapping[str, list[dict[str, Any]]],
) -> list[PluginReport]:
    """Every plugin, loaded or not: built-ins first, then the others by name.

    Build ``catalog`` and ``capabilities`` first: calling the hooks is what
    records a raising hook in ``pm.failures``, and a plugin with such a
    failure is shown as ``error`` with its reason even though it is loaded.
    """
    # Keyed by (name, distribution): two distributions may claim one name,
    # and the loser's failure must not mark the winner as broken.
    reasons: dict[tuple[str, str], dict[str, str]] = {}
    for failure in pm.failures:
        # dict as an ordered set: the same hook error may be recorded twice
        # when one process lists plugins twice (tests do).
        reasons.setdefault((failure.name, failure.distribution), {})[failure.reason] = failure.status

    contributed = _contributions(catalog)
    reports: list[PluginReport] = []
    for name, origin in pm.origins.items():
        plugin = pm.get_plugin(name)
        hooks = [caller.name.removeprefix("anyserve_") for caller in pm.get_hookcallers(plugin) or []]
        contributes = {key: list(contributed.get(name, {}).get(key, [])) for key in CONTRIBUTION_KEYS}
        contributes["commands"] = list(commands.get(name, []))
        contributes["capabilities"] = list(capabilities.get(name, []))
        failed = reasons.pop((name, origin.distribution), {})
        reports.append(
            PluginReport(
                name=name,
                distribution=origin.distribution,
                version=origin.version,
                status="error" if failed else "ok",
                builtin=origin.builtin,
                hooks=sorted(hooks),
                contributes=contributes,
                reason="; ".join(failed) or None,
            )
        )
    for (name, distribution), failed in reasons.items():
        failure = next(f for f in pm.failures if (f.name, f.distribution) == (name, distribution))
        reports.append(
            PluginReport(
                name=name,
                distribution=distribution,
                version=failure.version,
                status="disabled" if set(failed.values()) == {"disabled"} else "error",
                # A failure does not say whether it was a built-in (a disabled one is).
                builtin=distribution == "anyserve-core" and name in _BUILTIN_NAMES,
                reason="; ".join(failed),
            )
        )
    # Built-ins in their fixed order, then everything else by name, loaded or not.
    return sorted(reports, key=lambda r: (not r.builtin, "" if r.builtin else r.name))
