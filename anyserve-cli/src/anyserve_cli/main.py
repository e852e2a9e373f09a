"""The ``anyserve`` root command: a version flag, and whatever plugins add.

Nothing here knows any sub-command. Each one, ``anyserve plugins list``
included, arrives through the ``anyserve_register_commands`` hook, so the
in-tree commands and a third party's are registered the same way.
"""

from __future__ import annotations

from typing import Annotated

import typer

import anyserve
from anyserve.errors import ConfigError
from anyserve.plugins import PluginManager, get_plugin_manager
from anyserve_cli.registration import CliState, register_commands
from anyserve_cli.version import __version__

HELP = (
    "anyserve: a capability-routed serving runtime for LLM inference.\n\n"
    "Requests ask for a capability ({type: chat, model: llama-70b}), not a fixed model; "
    "the router sends each to a replica that offers it. Sub-commands come from installed "
    "plugins: `anyserve plugins list` shows them."
)


def version_line() -> str:
    """What ``--version`` prints: both versions, since plugins target core's."""
    return f"anyserve {__version__} (core {anyserve.__version__})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the versions and exit."),
    ] = False,
) -> None:
    """Options that apply before any sub-command."""


def build_cli(pm: PluginManager | None = None) -> typer.Typer:
    """The root application with every plugin's commands added.

    ``pm`` defaults to the process-wide manager; tests pass a private one so
    the environment's installed plugins never leak in.
    """
    state = CliState(pm or get_plugin_manager())
    cli = typer.Typer(
        name="anyserve",
        help=HELP,
        no_args_is_help=True,
        context_settings={"obj": state},
        pretty_exceptions_show_locals=False,
    )
    cli.callback()(_root)
    state.commands = register_commands(state.pm, cli)
    return cli


def main() -> None:
    """Console-script entry point."""
    cli = build_cli()
    try:
        cli(prog_name="anyserve")
    except ConfigError as exc:
        # A plugin's command may resolve configuration too: never a traceback.
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise SystemExit(2) from None
