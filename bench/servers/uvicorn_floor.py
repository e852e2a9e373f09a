"""Serving a floor's ASGI app as the router's CLI serves its own, and saying where it listens.

uvicorn with the router's settings (loop and http "auto": uvloop and
httptools when installed; no access log), so a floor differs from the
router only by what runs inside the app. Prints ``<name> ready at HOST:PORT``
once it listens, which the benchmarks wait for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn


async def serve(app: Any, host: str, port: int, name: str) -> None:
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"{name} ready at {host}:{bound}", flush=True)
    await task


def run(app: Any, host: str, port: int, name: str) -> None:
    """Serve ``app`` until stopped, on the event loop the router's CLI picks (uvicorn's "auto" loop factory)."""
    with asyncio.Runner(loop_factory=uvicorn.Config(app).get_loop_factory()) as runner:
        runner.run(serve(app, host, port, name))
