"""Calling the CLI hook one plugin at a time, and remembering who added what.

``anyserve plugins list`` shows which commands each plugin contributes, and a
plugin's broken hook must cost only that plugin's commands, so the hook is
never called as a whole (``pm.hook.anyserve_register_commands(cli=...)``):
each implementation is called on its own and the root application's
commands are compared before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import typer
from typer.main import get_command_name, solve_typer_info_defaults
from typer.models import CommandInfo, TyperInfo

from anyserve.catalog import call_impl
from anyserve.plugins import PluginManager

HOOK = "anyserve_register_commands"


@dataclass
class CliState:
    """What building the CLI learned, handed to commands as the click context's ``obj``.

    Commands that report on plugins need the same manager the CLI was built
    with (tests build CLIs on private managers) and the command owners that
    only the registration step can know.
    """

    pm: PluginManager
    #: plugin name -> command and group names it added to the root CLI.
    commands: dict[str, list[str]] = field(default_factory=dict)


def _entry_names(entry: CommandInfo | TyperInfo) -> list[str]:
    """The name(s) ``entry`` occupies on the command line, as typer will resolve them."""
    if isinstance(entry, CommandInfo):
        return [entry.name or get_command_name(entry.callback.__name__)]
    name = solve_typer_info_defaults(entry).name
    if name:
        return [name]
    # A group added without a name merges its commands into the root.
    return [n for sub in entry.typer_instance.registered_commands for n in _entry_names(sub)]


def _entries(cli: typer.Typer) -> list[CommandInfo | TyperInfo]:
    return [*cli.registered_commands, *cli.registered_groups]


def _drop(cli: typer.Typer, entry: CommandInfo | TyperInfo) -> None:
    for entries in (cli.registered_commands, cli.registered_groups):
        if entry in entries:
            entries.remove(entry)


def register_commands(pm: PluginManager, cli: typer.Typer) -> dict[str, list[str]]:
    """Let every plugin add its commands to ``cli``; return plugin -> names it added.

    Implementations are called in pluggy's order, like
    :func:`anyserve.catalog.call_each`, but through
    :func:`anyserve.catalog.call_impl` so that even what a plugin added before
    its hook raised is attributed to it rather than to the next plugin. A
    raising hook lands in ``pm.failures``; a command name another plugin
    already took is dropped and reported against the later plugin, so no
    plugin can silently replace another's command.
    """
    owners: dict[str, list[str]] = {}
    taken: dict[str, str] = {}  # command name -> plugin that added it
    for impl in reversed(getattr(pm.hook, HOOK).get_hookimpls()):
        before = {id(entry) for entry in _entries(cli)}
        call_impl(pm, impl, HOOK, {"cli": cli})
        for entry in [e for e in _entries(cli) if id(e) not in before]:
            names = _entry_names(entry)
            clash = next((n for n in names if n in taken), None)
            if clash is not None:
                _drop(cli, entry)
                pm.record_failure(
                    impl.plugin_name,
                    f"command {clash!r} is already provided by plugin {taken[clash]!r}; this one was not added",
                )
                continue
            for name in names:
                taken[name] = impl.plugin_name
                owners.setdefault(impl.plugin_name, []).append(name)
    return owners
