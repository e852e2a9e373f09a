"""The plugin manager: built-in defaults plus the ``anyserve`` entry-point group.

Built-ins are ordinary plugin modules listed in :data:`DEFAULT_PLUGINS` and
registered through the same hooks as external plugins (as pytest and
datasette do). External plugins are modules named by entry points in the
``anyserve`` group. ``ANYSERVE_LOAD_PLUGINS`` (comma-separated allow-list of
entry-point or distribution names; empty means none) and
``ANYSERVE_DISABLE_PLUGINS`` (block-list, built-ins included) narrow what is
loaded. A plugin that fails to import or declares a hook wrongly is recorded
in :attr:`PluginManager.failures` with its name and the reason; the others
keep working.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from anyserve import hookspecs
from anyserve.hookspecs import PROJECT_NAME

ENTRY_POINT_GROUP = "anyserve"
LOAD_ENV = "ANYSERVE_LOAD_PLUGINS"
DISABLE_ENV = "ANYSERVE_DISABLE_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "anyserve.builtins.inproc",
    "anyserve.builtins.memory",
    "anyserve.builtins.subset",
    "anyserve.builtins.jsonl",
    "anyserve.builtins.routing",
    "anyserve.builtins.delegation",
)


@dataclass(frozen=True)
class PluginOrigin:
    """Where a registered plugin came from."""

    name: str
    distribution: str
    version: str
    builtin: bool


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, and why."""

    name: str
    distribution: str
    version: str
    reason: str
    status: str = "error"  # "error" or "disabled"


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with anyserve's loading rules and failure bookkeeping."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, PluginOrigin] = {}
        self.failures: list[PluginFailure] = []

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        # Like pytest: an unmarked function with the project prefix is a hook
        # implementation too, so a plugin that forgot @hookimpl (or misspelled
        # a hook) is checked instead of silently ignored.
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("anyserve_"):
            method = getattr(plugin, name, None)
            if callable(method):
                return {}
        return opts

    def register_checked(self, plugin: Any, origin: PluginOrigin) -> bool:
        """Register ``plugin``; on a bad hook record a failure and undo it."""
        try:
            self.register(plugin, name=origin.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(origin, f"invalid hook implementation: {exc}")
            return False
        unknown = [hc.name for hc in self.get_hookcallers(plugin) or [] if not hc.has_spec()]
        if unknown:
            self.unregister(plugin)
            known = [n for n in dir(hookspecs) if n.startswith("anyserve_")]
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, known, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self._fail(origin, "unknown hook " + ", ".join(hints))
            return False
        self.origins[origin.name] = origin
        return True

    def _fail(self, origin: PluginOrigin, reason: str, status: str = "error") -> None:
        self.failures.append(PluginFailure(origin.name, origin.distribution, origin.version, reason, status))

    def load_defaults(self, disabled: set[str]) -> None:
        version = _core_version()
        for module_name in DEFAULT_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            origin = PluginOrigin(short, "anyserve-core", version, builtin=True)
            if short in disabled or module_name in disabled:
                self._fail(origin, f"disabled by {DISABLE_ENV}", status="disabled")
                continue
            self.register_checked(importlib.import_module(module_name), origin)

    def load_entrypoints(self, allowed: set[str] | None, disabled: set[str]) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            origin = PluginOrigin(ep.name, dist_name, version, builtin=False)
            if ep.name in self.origins:
                self._fail(origin, f"plugin name {ep.name!r} is already taken by {self.origins[ep.name].distribution}")
                continue
            if {ep.name, dist_name} & disabled:
                self._fail(origin, f"disabled by {DISABLE_ENV}", status="disabled")
                continue
            if allowed is not None and not {ep.name, dist_name} & allowed:
                self._fail(origin, f"not listed in {LOAD_ENV}", status="disabled")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a plugin's import may raise anything
                self._fail(origin, f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            self.register_checked(plugin, origin)

    def origin_of(self, plugin_name: str) -> PluginOrigin:
        return self.origins.get(plugin_name) or PluginOrigin(plugin_name, "?", "?", builtin=False)

    def record_failure(self, plugin_name: str, reason: str) -> None:
        """Report a plugin's misbehaviour by name; the other plugins keep working."""
        self._fail(self.origin_of(plugin_name), reason)

    def record_hook_error(self, plugin_name: str, hook: str, exc: BaseException) -> None:
        """A hook implementation raised: report it by plugin name, keep going."""
        self.record_failure(plugin_name, f"hook {hook} raised {type(exc).__name__}: {exc}")


def _core_version() -> str:
    try:
        return metadata.version("anyserve-core")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_plugin_manager(
    *,
    env: Mapping[str, str] | None = None,
    entrypoints: bool = True,
    plugins: tuple[ModuleType | object, ...] = (),
) -> PluginManager:
    """A fresh manager: built-ins, then (optionally) entry points, then ``plugins``.

    Tests use ``entrypoints=False`` and pass their own plugin objects so the
    environment's installed plugins never leak in.
    """
    env = os.environ if env is None else env
    allowed = _names(env.get(LOAD_ENV))
    disabled = _names(env.get(DISABLE_ENV)) or set()
    pm = PluginManager()
    pm.load_defaults(disabled)
    if entrypoints:
        pm.load_entrypoints(allowed, disabled)
    for index, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"plugin-{index}"
        pm.register_checked(plugin, PluginOrigin(name, "<in-process>", "", builtin=False))
    return pm


_lock = threading.Lock()
_shared: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, loaded once (guarded) on first use."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = create_plugin_manager()
        return _shared
