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

Registration hooks are called one implementation at a time, always through
:meth:`PluginManager.each_impl`, so every contribution is attributed to its
plugin; a hook wrapper on one of them is refused, never silently dropped.
``ANYSERVE_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pprint import pformat
from types import ModuleType
from typing import Any, TextIO

import pluggy

from anyserve import hookspecs
from anyserve.hookspecs import PROJECT_NAME

ENTRY_POINT_GROUP = "anyserve"
LOAD_ENV = "ANYSERVE_LOAD_PLUGINS"
DISABLE_ENV = "ANYSERVE_DISABLE_PLUGINS"
TRACE_ENV = "ANYSERVE_TRACE_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "anyserve.builtins.inproc",
    "anyserve.builtins.memory",
    "anyserve.builtins.subset",
    "anyserve.builtins.jsonl",
    "anyserve.builtins.least_loaded",
    "anyserve.builtins.routing_filters",
    "anyserve.builtins.routing_scorers",
    "anyserve.builtins.routing_session",
    "anyserve.builtins.routing_prefix",
    "anyserve.builtins.routing_pickers",
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


@dataclass(frozen=True)
class PerImpl:
    """A hook argument built afresh for each implementation :meth:`PluginManager.each_impl` calls.

    ``make(plugin_name)`` builds the value just before that plugin's
    implementation runs; ``done(plugin_name, value)``, if given, runs right
    after it, whether it returned or raised, so what a plugin did before
    raising is still attributed to it and never to the next plugin.
    """

    make: Callable[[str], Any]
    done: Callable[[str, Any], None] | None = None


class _Registrar:
    """The ``register`` callable one implementation receives: type-checks and keeps its records."""

    def __init__(self, record_type: type) -> None:
        self.record_type = record_type
        self.records: list[Any] = []

    def __call__(self, record: Any) -> None:
        if not isinstance(record, self.record_type):
            raise TypeError(f"register() expects a {self.record_type.__name__}, got {type(record).__name__}")
        self.records.append(record)

    def __repr__(self) -> str:  # a trace shows what was registered through it
        return f"<register {self.record_type.__name__}: {self.records!r}>"


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def _is_registration(caller: pluggy.HookCaller) -> bool:
    """Every hook that is not ``firstresult`` is a registration hook (see :mod:`anyserve.hookspecs`)."""
    return caller.spec is not None and not caller.spec.opts.get("firstresult")


def _wrapper_refused(hook: str) -> str:
    return (
        f"hook wrappers are not supported on registration hook {hook}: its implementations are called "
        f"one at a time, so a wrapper would never run; wrap the factories your records carry instead"
    )


def _show(value: Any) -> str:
    return pformat(value, width=100, compact=True).replace("\n", "\n        ")


class HookTracer:
    """Prints each hook call to stderr: its arguments, the implementations called, the result.

    The shape of datasette's ``DATASETTE_TRACE_PLUGINS`` output, for pluggy's
    own calls (installed with ``add_hookcall_monitoring``) and for the calls
    :meth:`PluginManager.each_impl` makes one implementation at a time, which
    bypass pluggy's caller and so report here themselves. An argument whose
    ``repr`` the call changed (``register`` lists what a plugin registered)
    is shown again after the call.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._local = threading.local()  # per thread: the argument reprs of the calls in progress

    def _write(self, lines: list[str]) -> None:
        # stderr is looked up on each call, so redirecting it later (tests) is honoured.
        (self._stream or sys.stderr).write("\n".join(lines) + "\n")

    def _stack(self) -> list[dict[str, str]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def before(
        self, hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any], alone: bool = False
    ) -> None:
        self._stack().append({key: _show(value) for key, value in kwargs.items()})
        # pluggy calls the last registered first; wrappers are listed as such.
        called = [impl.plugin_name + (" (wrapper)" if _is_wrapper(impl) else "") for impl in reversed(hook_impls)]
        header = f"anyserve hook {hook_name}" + (" (one implementation at a time):" if alone else ":")
        self._write([header, f"    arguments: {_show(dict(kwargs))}", f"    implementations: {called}"])

    def finish(self, kwargs: Mapping[str, Any], result: Any = None, error: BaseException | None = None) -> None:
        stack = self._stack()
        shown = stack.pop() if stack else {}
        outcome = f"raised {type(error).__name__}: {error}" if error is not None else _show(result)
        lines = [f"    result: {outcome}"]
        lines += [f"    {k} after the call: {_show(v)}" for k, v in kwargs.items() if shown.get(k) != _show(v)]
        self._write(lines)

    def after(self, outcome: Any, hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Any) -> None:
        try:
            result = outcome.get_result()
        except BaseException as exc:  # the hook raised; pluggy re-raises it once this returns
            self.finish(kwargs, error=exc)
        else:
            self.finish(kwargs, result)


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with anyserve's loading rules, failure bookkeeping and one-at-a-time calls."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, PluginOrigin] = {}
        self.failures: list[PluginFailure] = []
        self.tracer: HookTracer | None = None

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
        callers = self.get_hookcallers(plugin) or []
        unknown = [hc.name for hc in callers if not hc.has_spec()]
        if unknown:
            self.unregister(plugin)
            known = [n for n in dir(hookspecs) if n.startswith("anyserve_")]
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, known, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self._fail(origin, "unknown hook " + ", ".join(hints))
            return False
        wrapped = [
            hc.name
            for hc in callers
            if _is_registration(hc) and any(i.plugin is plugin and _is_wrapper(i) for i in hc.get_hookimpls())
        ]
        if wrapped:
            # A declaration mistake, refused at load like a wrong signature.
            self.unregister(plugin)
            self._fail(origin, "; ".join(_wrapper_refused(name) for name in wrapped))
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

    # -- calling hooks one implementation at a time --------------------------

    def impl_names(self, hook_name: str) -> list[str]:
        """The plugins implementing ``hook_name`` in the order they are called: the last registered first.

        Wrappers are left out: they wrap a call and never answer one.
        """
        impls = reversed(getattr(self.hook, hook_name).get_hookimpls())
        return [impl.plugin_name for impl in impls if not _is_wrapper(impl)]

    def each_impl(self, hook_name: str, /, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call every implementation of ``hook_name`` on its own, in pluggy's order.

        Yields ``(plugin_name, result)`` so callers can attribute what each
        plugin contributed, which pluggy's single call over all of them
        cannot. Each implementation gets only the arguments it declares, as
        pluggy passes them; a :class:`PerImpl` value is built afresh for each
        one. An implementation that raises is recorded with
        :meth:`record_hook_error` and yields nothing; the next one still
        runs. A hook wrapper (only a plugin registered without
        :meth:`register_checked` can still hold one) is never run: it is
        recorded as refused.
        """
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            if _is_wrapper(impl):
                self.record_failure(impl.plugin_name, _wrapper_refused(hook_name))
                continue
            built = {key: value.make(impl.plugin_name) for key, value in kwargs.items() if isinstance(value, PerImpl)}
            ok, result = self._call_one(hook_name, impl, {**kwargs, **built})
            for key, value in built.items():
                done = kwargs[key].done
                if done is not None:
                    done(impl.plugin_name, value)
            if ok:
                yield impl.plugin_name, result

    def registrations(self, hook_name: str, record_type: type) -> Iterator[tuple[str, list[Any]]]:
        """For a ``register(record)`` hook: yield ``(plugin_name, records it registered)``.

        Each implementation gets a ``register`` of its own that accepts only
        ``record_type``, so a wrong record is that plugin's hook error.
        """
        registrars: dict[str, _Registrar] = {}

        def make(plugin_name: str) -> _Registrar:
            registrars[plugin_name] = _Registrar(record_type)
            return registrars[plugin_name]

        for plugin_name, _ in self.each_impl(hook_name, register=PerImpl(make)):
            yield plugin_name, registrars.pop(plugin_name).records

    def _call_one(self, hook_name: str, impl: pluggy.HookImpl, kwargs: Mapping[str, Any]) -> tuple[bool, Any]:
        if self.tracer is not None:
            self.tracer.before(hook_name, [impl], kwargs, alone=True)
        try:
            result = impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception as exc:  # a plugin's hook may raise anything
            if self.tracer is not None:
                self.tracer.finish(kwargs, error=exc)
            self.record_hook_error(impl.plugin_name, hook_name, exc)
            return False, None
        if self.tracer is not None:
            self.tracer.finish(kwargs, result)
        return True, result

    def trace_hook_calls(self, stream: TextIO | None = None) -> Callable[[], None]:
        """Print every hook call (``ANYSERVE_TRACE_PLUGINS``); returns a function that stops it."""
        tracer = self.tracer = HookTracer(stream)
        undo = self.add_hookcall_monitoring(tracer.before, tracer.after)

        def stop() -> None:
            undo()
            self.tracer = None

        return stop


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
    if env.get(TRACE_ENV, "") not in ("", "0"):
        pm.trace_hook_calls()
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
