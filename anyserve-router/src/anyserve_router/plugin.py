"""anyserve-router's plugin module: contributes the ``anyserve router`` and ``anyserve engine`` commands.

Registered by the ``router`` entry point in the ``anyserve`` group. It is
loaded in every anyserve process (replicas and their workers too), so it
imports nothing heavy: the command module, with FastAPI and uvicorn behind
it, is imported only when the CLI asks for commands.
"""

from __future__ import annotations

from typing import Any

from anyserve import hookimpl


@hookimpl
def anyserve_register_commands(cli: Any) -> None:
    from anyserve_router.cli import router
    from anyserve_router.engine_cmd import engine_app

    cli.command(name="router")(router)
    cli.add_typer(engine_app, name="engine")
