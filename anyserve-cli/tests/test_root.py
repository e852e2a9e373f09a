"""The root command: version, help, and how plugins' commands get attributed."""

from __future__ import annotations

import importlib.metadata

import pytest
import typer
from typer.testing import CliRunner

import anyserve
from anyserve import hookimpl
from anyserve.plugins import PluginManager, PluginOrigin, create_plugin_manager
from anyserve_cli.main import build_cli
from anyserve_cli.plugin_commands import CliState
from anyserve_cli.version import __version__


def _origin(name: str) -> PluginOrigin:
    return PluginOrigin(name, f"anyserve-test-{name}", "1.2.3", builtin=False)


class Greeter:
    """A plugin adding one command and one group."""

    @hookimpl
    def anyserve_register_commands(self, cli: typer.Typer) -> None:
        @cli.command()
        def say_hello(name: str = "world") -> None:
            print(f"hello {name}")

        group = typer.Typer()

        @group.command()
        def ls() -> None:
            print("nothing here")

        cli.add_typer(group, name="things")


class HalfBroken:
    """Adds a command, then raises: the command is still its own, the error is reported."""

    @hookimpl
    def anyserve_register_commands(self, cli: typer.Typer) -> None:
        @cli.command()
        def partial() -> None:
            print("partial")

        raise RuntimeError("boom")


class Squatter:
    """Adds a command under a name Greeter uses too."""

    @hookimpl
    def anyserve_register_commands(self, cli: typer.Typer) -> None:
        @cli.command("say-hello")
        def other() -> None:
            print("squatter says hi")


def test_version_prints_cli_and_core_versions(invoke) -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"anyserve {__version__} (core {anyserve.__version__})"


def test_help_explains_anyserve_and_lists_plugin_commands(invoke) -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "capability-routed serving runtime" in result.stdout
    assert "plugins" in result.stdout


def test_no_arguments_shows_help(invoke) -> None:
    result = invoke()
    assert "Usage" in result.output
    assert "plugins" in result.output


def _state(cli: typer.Typer) -> CliState:
    state = cli.info.context_settings["obj"]
    assert isinstance(state, CliState)
    return state


def test_commands_are_attributed_to_the_plugin_that_added_them(cli_pm: PluginManager, invoke) -> None:
    cli_pm.register_checked(Greeter(), _origin("greeter"))
    cli = build_cli(cli_pm)
    commands = _state(cli).commands
    assert "plugins" in commands["cli"]  # anyserve-cli's own plugin may add more (start, ...)
    assert commands["greeter"] == ["say-hello", "things"]
    result = invoke("say-hello", "--name", "Ada")
    assert result.exit_code == 0
    assert result.stdout == "hello Ada\n"
    assert invoke("things", "ls").stdout == "nothing here\n"


def test_raising_hook_is_reported_and_costs_only_that_plugin(cli_pm: PluginManager, invoke) -> None:
    cli_pm.register_checked(HalfBroken(), _origin("halfbroken"))
    cli_pm.register_checked(Greeter(), _origin("greeter"))
    cli = build_cli(cli_pm)
    # What it added before raising stays its own, not the next plugin's.
    assert _state(cli).commands["halfbroken"] == ["partial"]
    assert _state(cli).commands["greeter"] == ["say-hello", "things"]
    [failure] = cli_pm.failures
    assert failure.name == "halfbroken"
    assert "anyserve_register_commands raised RuntimeError: boom" in failure.reason
    result = invoke("say-hello")
    assert result.exit_code == 0
    assert "Traceback" not in result.output


def test_a_taken_command_name_is_refused_and_reported(cli_pm: PluginManager, invoke) -> None:
    cli_pm.register_checked(Greeter(), _origin("greeter"))
    cli_pm.register_checked(Squatter(), _origin("squatter"))
    cli = build_cli(cli_pm)
    # pluggy's order (last registered first, as each_impl): squatter comes
    # first, so greeter's duplicate is the one refused; its other group stays.
    commands = _state(cli).commands
    assert (commands["squatter"], commands["greeter"]) == (["say-hello"], ["things"])
    [failure] = cli_pm.failures
    assert failure.name == "greeter"
    assert "command 'say-hello' is already provided by plugin 'squatter'" in failure.reason
    result = invoke("say-hello")
    assert result.exit_code == 0
    assert result.stdout == "squatter says hi\n"


def test_an_allow_list_keeps_the_command_lines_own_commands() -> None:
    from anyserve.plugins import create_plugin_manager
    from anyserve_cli.main import build_cli

    pm = create_plugin_manager(env={"ANYSERVE_LOAD_PLUGINS": "some-capability-plugin"})
    names = {c.name or c.callback.__name__ for c in build_cli(pm).registered_commands}
    assert {"start", "status"} <= names
    assert not [f for f in pm.failures if f.name == "cli"]

    blocked = create_plugin_manager(env={"ANYSERVE_DISABLE_PLUGINS": "cli"})
    assert "start" not in {c.name or c.callback.__name__ for c in build_cli(blocked).registered_commands}


def test_a_known_command_of_an_uninstalled_distribution_names_it(invoke) -> None:
    # the private manager holds no router plugin: as if anyserve-router were not installed
    result = invoke("router", "--port", "8080")
    assert result.exit_code == 2
    assert result.stderr == "error: `anyserve router` is provided by anyserve-router: pip install anyserve-router\n"
    assert "No such command" not in result.output
    assert "`anyserve router` (from anyserve-router)" in invoke("--help").stdout


def test_an_unknown_command_is_still_no_such_command(invoke) -> None:
    result = invoke("routr")
    assert result.exit_code == 2
    assert "No such command" in result.output
    assert "pip install" not in result.output


def test_a_known_command_whose_distribution_is_installed_but_disabled_says_so() -> None:
    try:
        importlib.metadata.distribution("anyserve-router")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("anyserve-router is not installed here")
    pm = create_plugin_manager(env={"ANYSERVE_DISABLE_PLUGINS": "router"})
    result = CliRunner().invoke(build_cli(pm), ["router", "--help"])
    assert result.exit_code == 2
    assert "`anyserve router` is provided by anyserve-router, which is installed but not loaded" in result.stderr
    assert "disabled by ANYSERVE_DISABLE_PLUGINS" in result.stderr
