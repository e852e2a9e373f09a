"""The ``anyserve`` root command: a version flag, and whatever plugins add.

Nothing here defines a sub-command. Each one, ``anyserve plugins list``
included, arrives through the ``anyserve_register_commands`` hook, so the
in-tree commands and a third party's are registered the same way. The root
only knows which of the project's optional distributions provide which
command (:data:`KNOWN_COMMANDS`), so a command that is missing because its
distribution is not installed says what to install instead of "No such
command".
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import anyserve
from anyserve.errors import ConfigError
from anyserve.plugins import PluginManager, PluginOrigin, get_plugin_manager
from anyserve_cli.plugin_commands import CliState, register_commands
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


OWN_PLUGIN = "cli"

#: Commands the project's own optional distributions add: command -> distribution.
#: Only for the hint when one is missing; the commands still arrive through the hook.
KNOWN_COMMANDS: dict[str, str] = {"router": "anyserve-router"}


def missing_command_hint(name: str, pm: PluginManager) -> str | None:
    """Why ``anyserve NAME`` is not there, when it is a known command of an optional distribution."""
    distribution = KNOWN_COMMANDS.get(name)
    if distribution is None:
        return None
    failure = next((f for f in pm.failures if f.distribution == distribution), None)
    if failure is not None:  # installed, but disabled or broken: installing again would not help
        return f"`anyserve {name}` is provided by {distribution}, which is installed but not loaded: {failure.reason}"
    return f"`anyserve {name}` is provided by {distribution}: pip install {distribution}"


class RootGroup(TyperGroup):
    """The root click group: an unknown command that a known distribution provides names that distribution."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and self.get_command(ctx, args[0]) is None and isinstance(ctx.obj, CliState):
            hint = missing_command_hint(args[0], ctx.obj.pm)
            if hint is not None:
                typer.echo(f"error: {hint}", err=True)
                ctx.exit(2)
        return super().resolve_command(ctx, args)


def _not_installed_epilog(state: CliState) -> str | None:
    """For ``--help``: the known commands this installation lacks, and where they come from."""
    taken = {name for names in state.commands.values() for name in names}
    missing = [f"`anyserve {c}` (from {d})" for c, d in KNOWN_COMMANDS.items() if c not in taken]
    return f"Not available here: {', '.join(missing)}." if missing else None


def keep_own_commands(pm: PluginManager) -> None:
    """An ``ANYSERVE_LOAD_PLUGINS`` allow-list narrows plugins, never the command line itself.

    anyserve-cli's commands arrive through its own entry point like anyone
    else's; an allow-list that names only, say, a capability plugin would
    otherwise leave ``anyserve start`` undefined. ``ANYSERVE_DISABLE_PLUGINS=cli``
    still removes them.
    """
    skipped = [f for f in pm.failures if f.name == OWN_PLUGIN and f.reason.startswith("not listed in")]
    if pm.has_plugin(OWN_PLUGIN) or not skipped:
        return
    from anyserve_cli import commands

    pm.failures.remove(skipped[0])
    pm.register_checked(commands, PluginOrigin(OWN_PLUGIN, "anyserve-cli", __version__, builtin=False))


def build_cli(pm: PluginManager | None = None) -> typer.Typer:
    """The root application with every plugin's commands added.

    ``pm`` defaults to the process-wide manager; tests pass a private one so
    the environment's installed plugins never leak in.
    """
    state = CliState(pm or get_plugin_manager())
    keep_own_commands(state.pm)
    cli = typer.Typer(
        name="anyserve",
        cls=RootGroup,
        help=HELP,
        no_args_is_help=True,
        context_settings={"obj": state},
        pretty_exceptions_show_locals=False,
    )
    state.commands = register_commands(state.pm, cli)
    cli.callback(epilog=_not_installed_epilog(state))(_root)
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
