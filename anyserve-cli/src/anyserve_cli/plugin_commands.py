"""Calling the CLI hook one plugin at a time, and remembering who added what.

``anyserve plugins list`` shows which commands each plugin contributes, and a
plugin's broken hook must cost only that plugin's commands, so the hook is
never called as a whole (``pm.hook.anyserve_register_commands(cli=...)``):
each implementation is called on its own, through
:meth:`~anyserve.plugins.PluginManager.each_impl`, and the root
application's commands are compared before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import typer
from typer.main import get_command_name, solve_typer_info_defaults
from typer.models import CommandInfo, TyperInfo

from anyserve.plugins import PerImpl, PluginManager

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

    Every plugin gets the root application itself (a plugin may extend a
    group another added), and what appeared during its call is attributed
    to it, also when its hook raised after adding something: the
    :class:`~anyserve.plugins.PerImpl` ``done`` step runs either way, and
    the raise lands in ``pm.failures``. A command name another plugin
    already took is dropped and reported against the later plugin, so no
    plugin can silently replace another's command.
    """
    owners: dict[str, list[str]] = {}
    taken: dict[str, str] = {}  # command name -> plugin that added it
    before: set[int] = set()

    def hand_over(plugin_name: str) -> typer.Typer:
        before.clear()
        before.update(id(entry) for entry in _entries(cli))
        return cli

    def attribute(plugin_name: str, _cli: typer.Typer) -> None:
        for entry in [e for e in _entries(cli) if id(e) not in before]:
            names = _entry_names(entry)
            clash = next((n for n in names if n in taken), None)
            if clash is not None:
                _drop(cli, entry)
                pm.record_failure(
                    plugin_name,
                    f"command {clash!r} is already provided by plugin {taken[clash]!r}; this one was not added",
                )
                continue
            for name in names:
                taken[name] = plugin_name
                owners.setdefault(plugin_name, []).append(name)

    for _ in pm.each_impl(HOOK, cli=PerImpl(hand_over, attribute)):
        pass
    return owners
