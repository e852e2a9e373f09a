"""anyserve-cli's own plugin: it adds its commands through the CLI hook.

Registered by the ``cli`` entry point in the ``anyserve`` group, so the
commands anyserve-cli ships take the same path as a third party's and show up
in ``anyserve plugins list`` the same way. Every anyserve process (each
worker included) imports this module while loading plugins, so the command
modules — typer, rich, httpx and the demo — are imported only when the hook
runs, which only the command line does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyserve import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def anyserve_register_commands(cli: typer.Typer) -> None:
    from anyserve_cli.console_cmd import console
    from anyserve_cli.demo_cmd import demo
    from anyserve_cli.objects_cmd import objects_app
    from anyserve_cli.plugins_cmd import plugins_app
    from anyserve_cli.start_cmd import start
    from anyserve_cli.status_cmd import status
    from anyserve_cli.top_cmd import top

    cli.add_typer(plugins_app, name="plugins")
    cli.command()(start)
    cli.add_typer(objects_app, name="objects")
    cli.command()(status)
    cli.command()(top)
    cli.command()(demo)
    cli.command()(console)
