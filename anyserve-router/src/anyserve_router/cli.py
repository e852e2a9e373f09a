"""``anyserve router``: run the router (registry, capability routing, SSE bridge) until stopped.

uvicorn runs programmatically in this process; the ready line is printed
only once the socket listens, so scripts can wait for it. Its loop is
the one ``ANYSERVE_EVENT_LOOP`` names (:mod:`anyserve.event_loop`; uvloop by
default, from uvicorn's standard extra, a dependency); its HTTP protocol is httptools' with the router's bounds on
connections, header size and the time to send a request
(:mod:`anyserve_router.http_limits`). Log lines written while a request is
served name it (``[request <id>]``).
"""

from __future__ import annotations

import asyncio
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from anyserve import event_loop, gc_policy
from anyserve.config import load_settings
from anyserve.protocol.shapes import set_max_tensor_elements
from anyserve_router.app import RouterApp, create_app
from anyserve_router.grpc_front import start_grpc_front
from anyserve_router.http_limits import HttpLimits, protocol_class
from anyserve_router.request_context import configure_logging

READY_POLL_SECONDS = 0.05


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket for ``host:port``, or a one-line error instead of uvicorn's traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    return sock


async def _serve(
    server: uvicorn.Server, sock: socket.socket, host: str, app: RouterApp, grpc_port: int | None, gc: str
) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(READY_POLL_SECONDS)
    if not server.started:
        await task
        return
    front = None
    grpc_line = ""
    if grpc_port is not None:
        try:
            front, bound, health = await start_grpc_front(app.state.anyserve, host, grpc_port)
        except OSError as exc:
            typer.echo(f"error: {exc}", err=True)
            server.should_exit = True
            await task
            raise typer.Exit(1) from None
        grpc_line = f", KServe v2 gRPC at {_url(host, bound).removeprefix('http://')}"
    gc_policy.settle(gc)  # started: what start-up made lives as long as the process
    port = sock.getsockname()[1]
    scheme = "https" if app.state.anyserve.settings.tls.enabled else "http"
    typer.echo(f"anyserve router ready at {_url(host, port, scheme)}{grpc_line} (Ctrl-C to stop)")
    try:
        await task
    finally:
        if front is not None:
            health.shutdown()
            await front.stop(grace=2.0)


def router(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8080; 0 picks a free one).")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Also serve KServe v2 gRPC (and gRPC health, reflection) on this port; 0 picks a free one."),
    ] = None,
    ttl_seconds: Annotated[
        float | None,
        typer.Option(help="Forget a replica silent for this long (default 15); it should heartbeat every ttl/3."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Configuration file (anyserve.toml).")] = None,
    log_level: Annotated[LogLevel, typer.Option(help="Log verbosity.")] = LogLevel.warning,
) -> None:
    """Run the router: replicas register with it, clients send it KServe v2 or OpenAI requests over HTTP.

    Requests are routed by capability (X-Capability-<Key> headers, or the
    KServe model name) to a live replica; POST /infer/stream streams the
    responses back as Server-Sent Events. The OpenAI API is under /v1/
    (chat/completions, completions, embeddings, responses, models), where
    "model" selects {type: chat|completion|embed, model: ...} or an
    [openai.aliases] entry. With --grpc-port, stock KServe v2 gRPC clients
    (tritonclient.grpc, kserve) can call the router too.
    """
    settings = load_settings(
        config,
        overrides={
            "router.host": host,
            "router.port": port,
            "router.grpc_port": grpc_port,
            "router.ttl_seconds": ttl_seconds,
        },
    )
    level = log_level.value
    configure_logging(level)
    gc = gc_policy.choice()  # ANYSERVE_GC, read before anything starts
    app = create_app(settings)
    set_max_tensor_elements(settings.replica.max_tensor_elements)  # the router decodes protobuf bodies too
    limits, warning = HttpLimits.of(settings.router)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    protocol, _ = protocol_class(limits)
    sock = _listen(settings.router.host, settings.router.port)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop=event_loop.choice(),  # ANYSERVE_EVENT_LOOP, as the replica's processes read it (uvicorn's names)
            http=protocol,
            ws="none",
            # Nothing in the router reads the client's address, and a peer's X-Forwarded-For is not to be
            # believed: uvicorn's proxy-headers middleware would only cost every request a pass over its headers.
            proxy_headers=False,
            timeout_keep_alive=limits.keep_alive,  # type: ignore[arg-type]  # seconds, a float is fine
            log_level=level,
            access_log=level == "debug",
            log_config=None,
            timeout_graceful_shutdown=5,
            ssl_certfile=settings.tls.cert_file,  # [tls]: HTTPS (and the gRPC front in TLS)
            ssl_keyfile=settings.tls.key_file,
        )
    )
    try:
        # As uvicorn.Server.run does: the event loop comes from the config (uvloop when installed).
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(_serve(server, sock, settings.router.host, app, settings.router.grpc_port, gc))
    finally:
        sock.close()
