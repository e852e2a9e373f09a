"""anyserve-cli's own plugin: it adds its commands through the CLI hook.

Registered by the ``cli`` entry point in the ``anyserve`` group, so the
commands anyserve-cli ships take the same path as a third party's and show up
in ``anyserve plugins list`` the same way.
"""

from __future__ import annotations

import typer

from anyserve import hookimpl
from anyserve_cli.demo_cmd import demo
from anyserve_cli.objects_cmd import objects_app
from anyserve_cli.plugins_cmd import plugins_app
from anyserve_cli.start_cmd import start
from anyserve_cli.status_cmd import status


@hookimpl
def anyserve_register_commands(cli: typer.Typer) -> None:
    cli.add_typer(plugins_app, name="plugins")
    cli.command()(start)
    cli.add_typer(objects_app, name="objects")
    cli.command()(status)
    cli.command()(demo)
