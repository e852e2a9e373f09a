"""``anyserve plugins list``: tables, JSON, --all, configuration and failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anyserve import AnyServe, hookimpl
from anyserve.plugins import PluginFailure, PluginManager, PluginOrigin
from anyserve.records import TransportSpec
from anyserve_cli.version import __version__

BUILTINS = {"inproc", "memory", "subset", "jsonl", "least_loaded", "delegation"}
PLUGIN_KEYS = {"name", "distribution", "version", "status", "builtin", "hooks", "contributes", "reason"}
CONTRIBUTION_KEYS = {
    "transports",
    "object_backends",
    "stream_encodings",
    "matchers",
    "routing_stages",
    "commands",
    "capabilities",
}


class EchoCapability:
    """Contributes two handlers and a transport."""

    @hookimpl
    def anyserve_register_capabilities(self, app: AnyServe) -> None:
        @app.capability(type="echo", model="tiny")
        def echo(request):
            return request

        @app.capability(type="echo", stream=True)
        def echo_stream(request, stream):
            pass

    @hookimpl
    def anyserve_register_transports(self, register) -> None:
        register(TransportSpec(name="echo-pipe", factory=lambda options: None))


class BrokenCapability:
    @hookimpl
    def anyserve_register_capabilities(self, app: AnyServe) -> None:
        raise ValueError("no GPU here")


def _json(result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in document["plugins"]}


def test_table_shows_the_cli_plugin_and_hides_builtins(invoke) -> None:
    result = invoke("plugins", "list")
    assert result.exit_code == 0
    out = result.stdout
    assert "cli" in out and "anyserve-cli" in out and __version__ in out
    assert "register_commands" in out or "commands" in out
    assert "command: plugins" in out
    assert "builtin" not in out  # no built-in row...
    assert "11 built-in plugins hidden" in out  # ...and it says so
    assert "selected by configuration" in out
    assert "transport.name" in out and "inproc (plugin inproc)" in out


def test_json_schema(invoke) -> None:
    document = _json(invoke("plugins", "list", "--json"))
    assert set(document) == {"plugins", "selected"}
    [cli] = document["plugins"]  # built-ins are left out without --all
    assert set(cli) == PLUGIN_KEYS
    assert set(cli["contributes"]) == CONTRIBUTION_KEYS
    commands = cli["contributes"].pop("commands")
    assert "plugins" in commands and all(isinstance(c, str) for c in commands)
    assert cli == {
        "name": "cli",
        "distribution": "anyserve-cli",
        "version": __version__,
        "status": "ok",
        "builtin": False,
        "hooks": ["register_commands"],
        "contributes": {key: [] for key in CONTRIBUTION_KEYS - {"commands"}},
        "reason": None,
    }
    selected = document["selected"]
    assert set(selected) == {
        "transport",
        "link",
        "objects",
        "encoding",
        "matcher",
        "routing.filters",
        "routing.scorers",
        "routing.picker",
        "routing",
        "delegation",
        "router",
    }
    assert selected["transport"] == {
        "setting": "transport.name",
        "value": "inproc",
        "source": "default",
        "selected": "inproc",
        "plugin": "inproc",
    }
    # the default link (tcp) is not installed in this environment: the router would use gRPC
    assert selected["link"] == {"setting": "link.name", "value": "tcp", "source": "default", "selected": "grpc"}
    assert selected["routing"] == {"setting": None, "selected": "least_loaded", "order": ["least_loaded"]}
    assert selected["routing.scorers"] == {
        "setting": "routing.scorers",
        "value": "cold_start=2, least_load=1",
        "source": "default",
        "selected": "cold_start (routing_scorers), least_load (routing_scorers)",
    }
    assert selected["routing.picker"]["selected"] == "highest (routing_pickers)"
    assert selected["router"] == {"setting": "router.url", "value": None, "source": "default"}


def test_all_includes_builtins(invoke) -> None:
    plugins = _by_name(_json(invoke("plugins", "list", "--json", "--all")))
    assert BUILTINS | {"cli"} <= set(plugins)
    for name in BUILTINS:
        assert plugins[name]["builtin"] is True
        assert plugins[name]["distribution"] == "anyserve-core"
        assert plugins[name]["status"] == "ok"
    assert plugins["inproc"]["contributes"]["transports"] == ["inproc"]
    assert plugins["memory"]["contributes"]["object_backends"] == [{"name": "mem", "schemes": ["mem"]}]
    assert plugins["subset"]["contributes"]["matchers"] == ["subset"]
    assert plugins["jsonl"]["contributes"]["stream_encodings"] == ["jsonl"]
    assert plugins["least_loaded"]["hooks"] == ["select_target"]
    assert plugins["delegation"]["hooks"] == ["delegate"]

    table = invoke("plugins", "list", "--all").stdout
    for name in BUILTINS:
        assert name in table
    assert "builtin" in table
    assert "object backend: mem (mem://)" in table
    assert "hidden" not in table


def test_unknown_transport_shows_the_error_with_installed_names(invoke) -> None:
    result = invoke("plugins", "list", "--transport", "nope")
    assert result.exit_code == 0  # the listing is produced; the problem is shown in it
    assert "nope" in result.stdout
    assert "no IPC transport named 'nope' is installed; installed: inproc." in result.stdout
    entry = _json(invoke("plugins", "list", "--json", "--transport", "nope"))["selected"]["transport"]
    assert entry["value"] == "nope"
    assert entry["source"] == "command line"
    assert entry["selected"] is None
    assert "installed: inproc" in entry["error"]


def test_overrides_reach_every_category(invoke) -> None:
    selected = _json(
        invoke(
            "plugins",
            "list",
            "--json",
            "--object-store",
            "mem://scratch",
            "--stream-encoding",
            "jsonl",
            "--matcher",
            "subset",
            "--router-url",
            "http://127.0.0.1:8080",
        )
    )["selected"]
    assert (selected["objects"]["selected"], selected["objects"]["plugin"]) == ("mem", "memory")
    assert selected["encoding"]["selected"] == "jsonl"
    assert selected["matcher"]["source"] == "command line"
    assert selected["router"] == {"setting": "router.url", "value": "http://127.0.0.1:8080", "source": "command line"}


def test_environment_and_config_file_are_named_as_sources(invoke, workdir: Path) -> None:
    (workdir / "anyserve.toml").write_text('[objects]\nurl = "mem://from-file"\n')
    selected = _json(invoke("plugins", "list", "--json", env={"ANYSERVE_STREAM_ENCODING": "jsonl"}))["selected"]
    assert selected["objects"]["source"] == str(workdir / "anyserve.toml")
    assert selected["objects"]["selected"] == "mem"
    assert selected["encoding"]["source"] == "$ANYSERVE_STREAM_ENCODING"
    # A flag beats both.
    selected = _json(invoke("plugins", "list", "--json", "--object-store", "mem://flag"))["selected"]
    assert (selected["objects"]["value"], selected["objects"]["source"]) == ("mem://flag", "command line")


def test_invalid_config_file_is_one_line_naming_file_key_and_expectation(invoke, workdir: Path) -> None:
    config = workdir / "bad.toml"
    config.write_text("[transport]\nname = 3\n")
    result = invoke("plugins", "list", "--config", str(config))
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert str(config) in line
    assert "transport.name" in line
    assert "valid string" in line
    assert "Traceback" not in result.output


def test_missing_or_malformed_config_file_exits_2(invoke, workdir: Path) -> None:
    result = invoke("plugins", "list", "--json", "--config", str(workdir / "absent.toml"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "config file not found" in result.stderr
    (workdir / "broken.toml").write_text("[transport\n")
    result = invoke("plugins", "list", "--config", str(workdir / "broken.toml"))
    assert result.exit_code == 2
    assert "not valid TOML" in result.stderr


def test_capabilities_and_failures_are_listed(cli_pm: PluginManager, invoke) -> None:
    cli_pm.register_checked(EchoCapability(), PluginOrigin("echo", "anyserve-capability-echo", "2.0", builtin=False))
    cli_pm.register_checked(BrokenCapability(), PluginOrigin("gpuonly", "anyserve-capability-gpu", "0.3", False))
    cli_pm.failures.append(PluginFailure("ghost", "anyserve-ghost", "9.9", "failed to import ghost: ImportError: nope"))

    plugins = _by_name(_json(invoke("plugins", "list", "--json")))
    echo = plugins["echo"]
    assert echo["status"] == "ok"
    assert echo["hooks"] == ["register_capabilities", "register_transports"]
    assert echo["contributes"]["capabilities"] == [{"type": "echo", "model": "tiny"}, {"type": "echo", "stream": True}]
    assert echo["contributes"]["transports"] == ["echo-pipe"]
    broken = plugins["gpuonly"]
    assert broken["status"] == "error"
    assert broken["reason"] == "hook anyserve_register_capabilities raised ValueError: no GPU here"
    assert broken["hooks"] == ["register_capabilities"]
    ghost = plugins["ghost"]
    assert (ghost["status"], ghost["distribution"], ghost["version"]) == ("error", "anyserve-ghost", "9.9")
    assert ghost["hooks"] == [] and ghost["reason"].startswith("failed to import ghost")

    table = invoke("plugins", "list", "--transport", "echo-pipe")
    assert table.exit_code == 0
    out = table.stdout
    assert "capability: type=echo, model=tiny" in out
    assert "capability: type=echo [stream]" in out
    assert "gpuonly (anyserve-capability-gpu 0.3) error: hook anyserve_register_capabilities raised" in out
    assert "ghost (anyserve-ghost 9.9) error: failed to import ghost" in out
    assert "echo-pipe (plugin echo)" in out


def test_disabled_builtin_is_listed_as_disabled(cli_pm: PluginManager, invoke) -> None:
    # What ANYSERVE_DISABLE_PLUGINS=jsonl records.
    cli_pm.failures.append(
        PluginFailure("jsonl", "anyserve-core", "0.1.0", "disabled by ANYSERVE_DISABLE_PLUGINS", status="disabled")
    )
    cli_pm.unregister(name="jsonl")
    del cli_pm.origins["jsonl"]
    plugins = _by_name(_json(invoke("plugins", "list", "--json", "--all")))
    assert plugins["jsonl"]["status"] == "disabled"
    assert plugins["jsonl"]["builtin"] is True
    assert "jsonl" not in _by_name(_json(invoke("plugins", "list", "--json")))


class WrapsTransports:
    """A hook wrapper on a registration hook: refused, and listed with the reason."""

    @hookimpl(wrapper=True)
    def anyserve_register_transports(self, register):
        return (yield)

    @hookimpl
    def anyserve_register_capabilities(self, app: AnyServe) -> None:
        @app.capability(type="wrapped")
        def wrapped(request):
            return request


class WrapsRouting:
    """A hook wrapper on a decision hook: pluggy honours it, so the plugin is fine."""

    @hookimpl(hookwrapper=True)
    def anyserve_select_target(self, query, candidates, scope):
        yield


def test_a_wrapper_on_a_registration_hook_is_listed_as_refused(cli_pm: PluginManager, invoke) -> None:
    assert not cli_pm.register_checked(WrapsTransports(), PluginOrigin("wraps", "anyserve-wraps", "0.1", False))
    assert cli_pm.register_checked(WrapsRouting(), PluginOrigin("timing", "anyserve-timing", "0.2", False))

    document = _json(invoke("plugins", "list", "--json"))
    assert document["selected"]["routing"]["order"] == ["least_loaded"]  # a wrapper wraps the call, never answers it
    plugins = _by_name(document)
    wraps = plugins["wraps"]
    assert (wraps["status"], wraps["distribution"], wraps["version"]) == ("error", "anyserve-wraps", "0.1")
    assert wraps["reason"].startswith(
        "hook wrappers are not supported on registration hook anyserve_register_transports:"
    )
    assert wraps["contributes"]["capabilities"] == []  # refused as a whole, like any bad hook declaration
    timing = plugins["timing"]
    assert (timing["status"], timing["hooks"], timing["reason"]) == ("ok", ["select_target"], None)

    out = invoke("plugins", "list").stdout
    assert (
        "wraps (anyserve-wraps 0.1) error: hook wrappers are not supported on registration hook "
        "anyserve_register_transports" in out
    )


class ModelClass:
    """Contributes a worker class (a model loaded in ``on_start``), not a plain handler."""

    @hookimpl
    def anyserve_register_capabilities(self, app: AnyServe) -> None:
        @app.worker(capabilities=[{"type": "embed", "model": "mini"}])
        class Embedder:
            def handle(self, request: Any) -> Any:
                return {}


def test_worker_class_capabilities_are_listed_too(cli_pm: PluginManager, invoke) -> None:
    cli_pm.register_checked(ModelClass(), PluginOrigin("mini", "anyserve-capability-mini", "1.0", builtin=False))
    plugins = _by_name(_json(invoke("plugins", "list", "--json")))
    assert plugins["mini"]["contributes"]["capabilities"] == [{"type": "embed", "model": "mini"}]
