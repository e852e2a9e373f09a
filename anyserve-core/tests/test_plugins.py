"""The plugin manager: built-ins through the hooks, allow/deny lists, broken plugins."""

import os
import subprocess
import sys
import types

import pytest

from anyserve import hookimpl
from anyserve.candidates import Candidate
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError
from anyserve.plugins import DEFAULT_PLUGINS, PerImpl, create_plugin_manager
from anyserve.records import TransportSpec


def plugin(name: str, **hooks) -> types.SimpleNamespace:
    """A plugin object: the in-process equivalent of a module with hook functions."""
    return types.SimpleNamespace(__name__=name, **hooks)


def test_builtins_are_registered_through_the_hooks(plugin_manager):
    names = {origin.name for origin in plugin_manager.origins.values() if origin.builtin}
    assert names == {m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS}
    catalog = Catalog(plugin_manager)
    assert catalog.registries["transport"].owners == {"inproc": "inproc"}
    assert catalog.registries["objects"].owners == {"mem": "memory"}


def test_disable_builtins_by_name():
    pm = create_plugin_manager(entrypoints=False, env={"ANYSERVE_DISABLE_PLUGINS": "inproc, jsonl"})
    catalog = Catalog(pm)
    assert catalog.registries["transport"].names() == []
    assert {(f.name, f.status) for f in pm.failures} == {("inproc", "disabled"), ("jsonl", "disabled")}


def test_an_external_plugin_overrides_the_default_decisions(plugin_manager):
    @hookimpl
    def anyserve_select_target(query, candidates, scope):
        return candidates[-1]

    plugin_manager.register(plugin("last", anyserve_select_target=anyserve_select_target))
    cands = [Candidate(id=str(i), capability=None, in_flight=i) for i in range(3)]  # type: ignore[arg-type]
    chosen = plugin_manager.hook.anyserve_select_target(query={}, candidates=cands, scope="router")
    assert chosen.id == "2"  # the built-in would have picked the least loaded, "0"
    assert Catalog(plugin_manager).decision_order("anyserve_select_target") == ["last", "least_loaded"]


def test_unknown_hook_is_reported_with_a_suggestion(plugin_manager):
    @hookimpl
    def anyserve_register_transport(register):  # missing the final "s"
        pass

    from anyserve.plugins import PluginOrigin

    ok = plugin_manager.register_checked(
        plugin("typo", anyserve_register_transport=anyserve_register_transport),
        PluginOrigin("typo", "typo-dist", "1.0", builtin=False),
    )
    assert not ok
    failure = plugin_manager.failures[-1]
    assert failure.name == "typo" and failure.distribution == "typo-dist"
    assert (
        "anyserve_register_transport'" in failure.reason
        and "did you mean 'anyserve_register_transports'" in failure.reason
    )
    assert not plugin_manager.has_plugin("typo")


def test_unmarked_prefixed_functions_are_checked_too(plugin_manager):
    def anyserve_regster_matchers(register):
        pass

    from anyserve.plugins import PluginOrigin

    assert not plugin_manager.register_checked(
        plugin("unmarked", anyserve_regster_matchers=anyserve_regster_matchers),
        PluginOrigin("unmarked", "d", "1", builtin=False),
    )
    assert "did you mean 'anyserve_register_matchers'" in plugin_manager.failures[-1].reason


def test_wrong_hook_arguments_are_reported(plugin_manager):
    @hookimpl
    def anyserve_register_transports(registrar):
        pass

    from anyserve.plugins import PluginOrigin

    assert not plugin_manager.register_checked(
        plugin("badargs", anyserve_register_transports=anyserve_register_transports),
        PluginOrigin("badargs", "d", "1", builtin=False),
    )
    assert "registrar" in plugin_manager.failures[-1].reason


def test_a_hook_that_raises_is_reported_and_the_rest_keep_working(plugin_manager):
    @hookimpl
    def anyserve_register_transports(register):
        raise RuntimeError("cannot find libfoo")

    plugin_manager.register(plugin("explodes", anyserve_register_transports=anyserve_register_transports))
    catalog = Catalog(plugin_manager)
    assert catalog.registries["transport"].names() == ["inproc"]
    failure = plugin_manager.failures[-1]
    assert failure.name == "explodes"
    assert "anyserve_register_transports raised RuntimeError: cannot find libfoo" in failure.reason


def test_duplicate_names_name_both_plugins(plugin_manager):
    @hookimpl
    def anyserve_register_transports(register):
        register(TransportSpec(name="inproc", factory=lambda options: None))

    plugin_manager.register(plugin("impostor", anyserve_register_transports=anyserve_register_transports))
    catalog = Catalog(plugin_manager)  # listing still works ...
    assert "already registered" in plugin_manager.failures[-1].reason
    with pytest.raises(ConfigError, match="'inproc' is registered twice") as info:
        catalog.transport(load_settings(env={}))  # ... selecting the ambiguous name does not
    assert "plugin 'inproc'" in str(info.value) and "plugin 'impostor'" in str(info.value)


def test_register_checks_record_types(plugin_manager):
    @hookimpl
    def anyserve_register_transports(register):
        register("unix")

    plugin_manager.register(plugin("sloppy", anyserve_register_transports=anyserve_register_transports))
    Catalog(plugin_manager)
    assert "expects a TransportSpec, got str" in plugin_manager.failures[-1].reason


def test_unknown_names_list_what_is_installed(plugin_manager, tmp_path):
    catalog = Catalog(plugin_manager)
    settings = load_settings(env={"ANYSERVE_TRANSPORT": "unixx"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"no IPC transport named 'unixx' is installed; installed: inproc"):
        catalog.transport(settings)
    with pytest.raises(ConfigError, match=r"no object backend handles s3://.*installed: mem:// \(mem\)"):
        catalog.object_backend("s3://bucket/x")
    selected = catalog.selected(settings)
    assert selected["transport"]["selected"] is None and "unixx" in selected["transport"]["error"]
    assert selected["matcher"]["selected"] == "subset"
    assert selected["routing"]["selected"] == "least_loaded"


def test_the_link_is_a_network_transport_and_the_default_is_optional(plugin_manager, tmp_path):
    catalog = Catalog(plugin_manager)  # core alone: no network transport installed
    assert catalog.link(load_settings(env={}, cwd=tmp_path)) is None  # default tcp missing: gRPC
    assert catalog.selected(load_settings(env={}, cwd=tmp_path))["link"]["selected"] == "grpc"
    with pytest.raises(ConfigError, match="no IPC transport named 'tcp' is installed"):
        catalog.link(load_settings(env={"ANYSERVE_LINK": "tcp"}, cwd=tmp_path))  # asked for: must exist
    with pytest.raises(ConfigError, match=r"'inproc' is not a network transport.*use one of: none installed"):
        catalog.link(load_settings(env={"ANYSERVE_LINK": "inproc"}, cwd=tmp_path))

    @hookimpl
    def anyserve_register_transports(register):
        register(TransportSpec(name="tcp", factory=lambda options: None, network=True))

    plugin_manager.register(plugin("net", anyserve_register_transports=anyserve_register_transports))
    catalog = Catalog(plugin_manager)
    assert catalog.link(load_settings(env={}, cwd=tmp_path)).name == "tcp"
    assert catalog.link(load_settings(env={"ANYSERVE_LINK": "off"}, cwd=tmp_path)) is None
    assert catalog.selected(load_settings(env={}, cwd=tmp_path))["link"]["plugin"] == "net"


def test_call_each_attributes_results(plugin_manager):
    @hookimpl
    def anyserve_register_commands(cli):
        cli.append("hello")

    plugin_manager.register(plugin("cmds", anyserve_register_commands=anyserve_register_commands))
    cli: list[str] = []
    assert [name for name, _ in plugin_manager.each_impl("anyserve_register_commands", cli=cli)] == ["cmds"]
    assert cli == ["hello"]


def test_load_allow_list_env(monkeypatch):
    # With an empty allow-list no entry point is loaded, whatever is installed.
    pm = create_plugin_manager(env={"ANYSERVE_LOAD_PLUGINS": ""})
    assert all(origin.builtin for origin in pm.origins.values())


# -- one door for calling implementations one at a time ---------------------


def test_each_impl_passes_only_declared_arguments_and_records_a_raise(plugin_manager):
    @hookimpl
    def anyserve_select_target(candidates):  # declares one of the three arguments
        return candidates[-1]

    @hookimpl
    def raising_select_target(query, scope):
        raise RuntimeError(f"no {scope}")

    plugin_manager.register(plugin("narrow", anyserve_select_target=anyserve_select_target))
    plugin_manager.register(plugin("raises", anyserve_select_target=raising_select_target))
    cands = [Candidate(id=str(i), capability=None, in_flight=i) for i in range(2)]  # type: ignore[arg-type]
    got = list(plugin_manager.each_impl("anyserve_select_target", query={}, candidates=cands, scope="router"))
    # Last registered first, as pluggy calls them; the raising one yields nothing.
    assert [(name, result.id) for name, result in got] == [("narrow", "1"), ("least_loaded", "0")]
    assert plugin_manager.impl_names("anyserve_select_target") == ["raises", "narrow", "least_loaded"]
    [failure] = plugin_manager.failures
    assert failure.name == "raises"
    assert failure.reason == "hook anyserve_select_target raised RuntimeError: no router"


def test_per_impl_arguments_are_fresh_and_done_runs_even_after_a_raise(plugin_manager):
    @hookimpl
    def adds_then_raises(app):
        app.append("half")
        raise ValueError("no GPU")

    @hookimpl
    def adds(app):
        app.append("whole")

    plugin_manager.register(plugin("first", anyserve_register_capabilities=adds))
    plugin_manager.register(plugin("second", anyserve_register_capabilities=adds_then_raises))
    finished: dict[str, list[str]] = {}
    per_impl = PerImpl(make=lambda name: [], done=lambda name, app: finished.__setitem__(name, app))
    yielded = [name for name, _ in plugin_manager.each_impl("anyserve_register_capabilities", app=per_impl)]
    assert yielded == ["first"]
    assert finished == {"second": ["half"], "first": ["whole"]}  # each its own list; the raiser's kept
    assert [f.name for f in plugin_manager.failures] == ["second"]


def test_registrations_attribute_records_to_their_plugin(plugin_manager):
    @hookimpl
    def anyserve_register_transports(register):
        register(TransportSpec(name="a", factory=lambda options: None))
        register(TransportSpec(name="b", factory=lambda options: None))

    plugin_manager.register(plugin("two", anyserve_register_transports=anyserve_register_transports))
    got = {
        name: [r.name for r in records]
        for name, records in plugin_manager.registrations("anyserve_register_transports", TransportSpec)
    }
    assert got == {"two": ["a", "b"], "inproc": ["inproc"]}


# -- hook wrappers -------------------------------------------------------------


class WrapsRegistration:
    """A plugin with a new-style wrapper on a registration hook, and a useful decision hook."""

    def __init__(self) -> None:
        self.ran = False

    @hookimpl(wrapper=True)
    def anyserve_register_transports(self, register):
        self.ran = True
        return (yield)

    @hookimpl
    def anyserve_select_target(self, candidates):
        return candidates[0]


class OldStyleWrapsRegistration:
    @hookimpl(hookwrapper=True)
    def anyserve_register_matchers(self, register):
        yield


class WrapsDecision:
    """A wrapper on a decision hook: pluggy's ordinary call honours it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def anyserve_select_target(self, scope):
        chosen = yield
        self.seen.append(f"{scope} -> {chosen.id}")
        return chosen


@pytest.mark.parametrize(
    ("wrapping", "hook"),
    [(WrapsRegistration, "anyserve_register_transports"), (OldStyleWrapsRegistration, "anyserve_register_matchers")],
)
def test_a_wrapper_on_a_registration_hook_refuses_the_plugin(plugin_manager, wrapping, hook):
    from anyserve.plugins import PluginOrigin

    assert not plugin_manager.register_checked(wrapping(), PluginOrigin("wraps", "wraps-dist", "1.0", builtin=False))
    failure = plugin_manager.failures[-1]
    assert (failure.name, failure.distribution, failure.status) == ("wraps", "wraps-dist", "error")
    assert f"hook wrappers are not supported on registration hook {hook}" in failure.reason
    assert not plugin_manager.has_plugin("wraps")
    assert "wraps" not in plugin_manager.origins


def test_a_wrapper_that_got_past_the_check_is_reported_never_dropped(plugin_manager):
    wraps = WrapsRegistration()
    plugin_manager.register(wraps, name="wraps")  # plain pluggy registration, no check
    catalog = Catalog(plugin_manager)
    assert not wraps.ran
    assert catalog.registries["transport"].names() == ["inproc"]  # the others keep working
    [failure] = plugin_manager.failures
    assert failure.name == "wraps"
    assert failure.reason.startswith(
        "hook wrappers are not supported on registration hook anyserve_register_transports"
    )
    assert plugin_manager.impl_names("anyserve_register_transports") == ["inproc"]


def test_a_wrapper_on_a_decision_hook_is_honoured(plugin_manager):
    from anyserve.plugins import PluginOrigin

    wraps = WrapsDecision()
    assert plugin_manager.register_checked(wraps, PluginOrigin("timing", "timing-dist", "1.0", builtin=False))
    cands = [Candidate(id=str(i), capability=None, in_flight=i) for i in range(2)]  # type: ignore[arg-type]
    assert plugin_manager.hook.anyserve_select_target(query={}, candidates=cands, scope="agent").id == "0"
    assert wraps.seen == ["agent -> 0"]
    # it wraps, never answers
    assert Catalog(plugin_manager).decision_order("anyserve_select_target") == ["least_loaded"]
    assert plugin_manager.failures == []


# -- ANYSERVE_TRACE_PLUGINS ----------------------------------------------------


def _decide(pm) -> None:
    cands = [Candidate(id=str(i), capability=None, in_flight=i) for i in range(2)]  # type: ignore[arg-type]
    pm.hook.anyserve_select_target(query={"type": "chat"}, candidates=cands, scope="router")


def test_tracing_prints_pluggy_calls_and_one_at_a_time_calls(capsys):
    @hookimpl
    def anyserve_register_matchers(register):
        raise RuntimeError("boom")

    pm = create_plugin_manager(
        entrypoints=False,
        env={"ANYSERVE_TRACE_PLUGINS": "1"},
        plugins=(plugin("broken", anyserve_register_matchers=anyserve_register_matchers),),
    )
    Catalog(pm)
    _decide(pm)
    err = capsys.readouterr().err
    assert "anyserve hook anyserve_register_transports (one implementation at a time):\n" in err
    assert "    arguments: {'register': <register TransportSpec: []>}\n    implementations: ['inproc']\n" in err
    assert "    register after the call: <register TransportSpec: [TransportSpec(name='inproc'" in err
    assert "    implementations: ['broken']\n    result: raised RuntimeError: boom\n" in err
    assert "anyserve hook anyserve_select_target:\n    arguments: {'candidates': [Candidate(id='0'" in err
    assert "'query': {'type': 'chat'}" in err and "'scope': 'router'}" in err
    assert "    implementations: ['least_loaded']\n    result: Candidate(id='0'" in err


@pytest.mark.parametrize("env", [{}, {"ANYSERVE_TRACE_PLUGINS": ""}, {"ANYSERVE_TRACE_PLUGINS": "0"}])
def test_no_tracing_unless_asked(capsys, env):
    pm = create_plugin_manager(entrypoints=False, env=env)
    Catalog(pm)
    _decide(pm)
    assert capsys.readouterr().err == ""


def test_the_environment_variable_turns_tracing_on_in_a_process():
    script = "from anyserve.catalog import Catalog; Catalog()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSERVE_")} | {"ANYSERVE_LOAD_PLUGINS": ""}
    traced = subprocess.run(
        [sys.executable, "-c", script], env=env | {"ANYSERVE_TRACE_PLUGINS": "1"}, capture_output=True, text=True
    )
    assert traced.returncode == 0, traced.stderr
    assert "anyserve hook anyserve_register_transports (one implementation at a time):" in traced.stderr
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
