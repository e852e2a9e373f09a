"""``anyserve start``: one replica — a gRPC agent and its workers — until a signal.

Start-up fails fast and says why (the app cannot be imported, no handler, a
name no plugin provides, the port is taken). Shutdown on SIGTERM or Ctrl-C
stops accepting, gives in-flight requests ``replica.shutdown_grace`` seconds,
stops the workers and removes their sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import Callable

import grpc

from anyserve.config import Settings
from anyserve.delegation import Delegation
from anyserve.errors import ConfigError
from anyserve.replica.agent import Agent
from anyserve.replica.assembly import Assembly
from anyserve.replica.pool import WorkerPool
from anyserve.replica.registration import Registration
from anyserve.replica.supervisor import Supervisor, WorkerStartError
from anyserve.router_client import AsyncRouterClient
from anyserve.transport import Query

log = logging.getLogger("anyserve.replica")


class StartError(ConfigError):
    """The replica could not start; the message says why."""


def _port_free(host: str, port: int) -> bool:
    if port == 0:
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Replica:
    """A running replica; ``serve()`` returns once it has shut down."""

    def __init__(self, settings: Settings, app_ref: str | None, *, log_level: str = "WARNING") -> None:
        replica_id = settings.replica.replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.settings = settings
        self.assembly = Assembly(settings, app_ref, replica_id, log_level=log_level)
        self.pool = WorkerPool(self.assembly.matcher, self.assembly.pm)
        self.agent = Agent(
            self.pool,
            self.assembly.pm,
            replica_id=replica_id,
            max_message_bytes=settings.replica.max_message_bytes,
            router_url=settings.router.url,
            forward=self._forward,
        )
        self._routers: dict[str, AsyncRouterClient] = {}
        self.registration: Registration | None = None
        self.run_dir = tempfile.mkdtemp(prefix="anyserve-")
        self.supervisor = Supervisor(self.assembly, self.pool, self.run_dir, settings.replica.workers)
        self.server: grpc.aio.Server | None = None
        self.endpoint = ""
        self._stop = asyncio.Event()

    @property
    def replica_id(self) -> str:
        return self.assembly.replica_id

    def _router(self, url: str) -> AsyncRouterClient:
        """One pooled HTTP client per router URL."""
        if url not in self._routers:
            self._routers[url] = AsyncRouterClient(url)
        return self._routers[url]

    async def _forward(self, decision: Delegation, payload: bytes, query: Query) -> bytes:
        assert decision.url is not None
        return await self._router(decision.url).infer(query, payload, headers=decision.headers)

    def advertised_endpoint(self, port: int) -> str:
        cfg = self.settings.replica
        if cfg.advertise:
            return cfg.advertise
        host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        cfg = self.settings.replica
        # Import the app here too: a broken --app fails before any process starts.
        app = self.assembly.app
        log.info("serving %d handler(s) from %s", len(app.handlers), self.assembly.app_ref or "installed plugins")
        if not _port_free(cfg.host, cfg.port):
            raise StartError(f"cannot listen on {cfg.host}:{cfg.port}: the port is already in use (choose --port)")
        limit = cfg.max_message_bytes
        self.server = grpc.aio.server(
            options=[
                # Headroom above the limit so the agent itself can answer with a message naming it.
                ("grpc.max_receive_message_length", 4 * limit),
                ("grpc.max_send_message_length", limit + 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.server.add_generic_rpc_handlers((self.agent.generic_handler(),))
        try:
            port = self.server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        except RuntimeError as exc:
            raise StartError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
        self.endpoint = self.advertised_endpoint(port)
        try:
            await self.supervisor.start()
        except WorkerStartError as exc:
            await self.supervisor.stop(grace=1.0)
            raise StartError(exc.message) from None
        await self.server.start()
        self.agent.ready = True
        if self.settings.router.url:
            self.registration = Registration(
                AsyncRouterClient(self.settings.router.url),
                self.replica_id,
                self.endpoint,
                offers=self.pool.offers,
                in_flight=lambda: sum(s.connection.in_flight for s in self.pool.slots.values()),
            )
            self.registration.start()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self.agent.ready = False
        if self.registration is not None:
            await self.registration.stop()  # the router stops sending before we stop serving
        if self.server is not None:
            await self.server.stop(self.settings.replica.shutdown_grace)
        await self.supervisor.stop()
        for client in self._routers.values():
            await client.aclose()
        shutil.rmtree(self.run_dir, ignore_errors=True)


async def serve(
    settings: Settings,
    app_ref: str | None,
    *,
    log_level: str = "WARNING",
    announce: Callable[[Replica], None] | None = None,
) -> None:
    """Run a replica until SIGTERM/SIGINT; ``announce`` is called once it is ready."""
    replica = Replica(settings, app_ref, log_level=log_level)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, replica.request_stop)
    try:
        await replica.start()
        if announce is not None:
            announce(replica)
        await replica.wait()
        log.info("shutting down (grace %.1fs)", settings.replica.shutdown_grace)
    finally:
        with contextlib.suppress(Exception):
            await replica.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.debug("replica %s stopped (pid %d)", replica.replica_id, os.getpid())
