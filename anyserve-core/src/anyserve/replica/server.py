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
from typing import Any

import grpc
import httpx

from anyserve import gc_policy, tls, tracing
from anyserve.config import Settings
from anyserve.credentials import Credentials
from anyserve.delegation import Delegation
from anyserve.errors import ConfigError
from anyserve.protocol import RequestMeta
from anyserve.protocol.grpc_server import bounded_server
from anyserve.protocol.health import HealthServicer
from anyserve.protocol.names import REQUEST_ID_HEADER, TIMEOUT_HEADER
from anyserve.records import TransportSpec
from anyserve.replica.agent import Agent
from anyserve.replica.assembly import Assembly
from anyserve.replica.health import serve_health
from anyserve.replica.lifecycle import Lifecycle
from anyserve.replica.link_service import LinkService, host_port, start_link
from anyserve.replica.load_report import load_report
from anyserve.replica.membership import Registration
from anyserve.replica.metrics import ReplicaMetrics, WorkerFigures
from anyserve.replica.metrics_http import MetricsServer
from anyserve.replica.pool import WorkerPool
from anyserve.replica.supervisor import Supervisor, WorkerStartError
from anyserve.router_client import AsyncRouterClient
from anyserve.routing import build_pipeline

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
        tracing.setup(settings.tracing, tracing.REPLICA_SERVICE)
        self.assembly = Assembly(settings, app_ref, replica_id, log_level=log_level)
        self.pool = WorkerPool(
            self.assembly.matcher,
            self.assembly.pm,
            build_pipeline(self.assembly.catalog, settings, scope="agent"),
        )
        self.pool.wait_seconds = settings.replica.worker_wait_seconds
        self.pool.on_change = self._changed  # a worker died, came back, or stopped answering: tell the router now
        self.run_dir = tempfile.mkdtemp(prefix="anyserve-")
        self.supervisor = Supervisor(self.assembly, self.pool, self.run_dir, settings.replica.workers)
        self.lifecycle = Lifecycle(
            self.assembly.app,
            self.supervisor,
            self.pool,
            self.assembly.matcher,
            budget=settings.replica.resources,
            on_change=self._changed,
            failed_retry=settings.replica.failed_retry_seconds,
        )
        #: The cluster token this replica presents to its router and asks of callers of its control services.
        self.credentials = Credentials.load(settings)
        #: How this replica checks the router's (and its own link's) certificate; None without ``[tls]``.
        self.client_tls = tls.client_context(settings.tls)
        self.agent = Agent(
            self.pool,
            self.assembly.pm,
            replica_id=replica_id,
            max_message_bytes=settings.replica.max_message_bytes,
            router_url=settings.router.url,
            forward=self._forward,
            lifecycle=self.lifecycle,
            offers=self.offers,
            status=self.status,
            credentials=self.credentials,
        )
        #: The workers' multiprocess metrics directory; None when no /metrics is served (metrics_port -1).
        self.worker_figures = WorkerFigures(self.run_dir) if settings.replica.metrics_port >= 0 else None
        if self.worker_figures is not None:
            self.supervisor.env = {**os.environ, **self.worker_figures.env()}
        self.metrics = ReplicaMetrics(
            self.in_flight,
            self.worker_states,
            self.worker_figures,
            in_process=self.supervisor.in_process,
            counting=settings.replica.metrics_port >= 0,
        )
        self.agent.metrics = self.metrics
        self.lifecycle.on_switch = self.metrics.switched
        self._metrics_server: MetricsServer | None = None
        #: ``http://host:port/metrics`` of the agent's metrics, when served.
        self.metrics_url = ""
        self._routers: dict[str, AsyncRouterClient] = {}
        self.registration: Registration | None = None
        self.server: grpc.aio.Server | None = None
        self.health: HealthServicer | None = None
        self.endpoint = ""
        #: ``<transport>://host:port`` of the router link, when one is served.
        self.link = ""
        self._link_service = LinkService(self.agent, self.offers, self.credentials)
        self._link_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._gc: asyncio.Task[None] | None = None
        #: True from the start of shutdown: the router stops choosing this replica (``draining``).
        self.draining = False

    @property
    def replica_id(self) -> str:
        return self.assembly.replica_id

    def offers(self) -> list[dict[str, Any]]:
        """What this replica can serve, each with its state: the plain workers' and every worker class's."""
        return self.pool.plain_offers() + self.lifecycle.offers()

    def in_flight(self) -> int:
        return sum(s.connection.in_flight for s in self.pool.slots.values())

    def signals(self) -> dict[str, Any]:
        """The load report a heartbeat carries (docs/routing.md, "Load signals")."""
        agent = self.agent
        return load_report(
            self.pool, self.lifecycle, agent.service_times, queued=agent.metrics.queued, draining=self.draining
        )

    def worker_states(self) -> list[tuple[str, str]]:
        return [(c.name, self.lifecycle.public_state(c)) for c in self.lifecycle.classes.values()]

    async def _start_metrics(self) -> None:
        """Serve ``/metrics`` on ``replica.host`` when ``replica.metrics_port`` is not -1."""
        cfg = self.settings.replica
        if cfg.metrics_port < 0:
            return
        self._metrics_server = MetricsServer(self.metrics, self.credentials, cfg.host, cfg.metrics_port)
        try:
            port = await self._metrics_server.start()
        except OSError as exc:
            raise StartError(
                f"cannot serve metrics on {cfg.host}:{cfg.metrics_port}: {exc.strerror or exc} "
                "(choose another --metrics-port, or -1 for none)"
            ) from None
        self.metrics_url = f"http://{host_port(self._advertised_host(), port)}/metrics"

    def status(self) -> dict[str, Any]:
        """What ``anyserve status`` shows for this replica (also sent to the router)."""
        return {
            "replica_id": self.replica_id,
            "endpoint": self.endpoint,
            "link": self.link or None,
            "link_requests": self._link_service.requests,
            "transport": self.assembly.transport.name,
            "in_flight": self.in_flight(),
            "workers": self.pool.snapshot(),
            **self.lifecycle.status(),
        }

    def _changed(self) -> None:
        """A worker class changed state: tell the router now, not at the next heartbeat."""
        if self.registration is not None:
            self.registration.refresh()

    def _router(self, url: str) -> AsyncRouterClient:
        """One pooled HTTP client per router URL."""
        if url not in self._routers:
            # No read timeout of its own: a delegated request carries its deadline, which the router keeps.
            self._routers[url] = AsyncRouterClient(
                url, timeout=httpx.Timeout(None, connect=5.0), token=self.credentials.cluster, verify=self.client_tls
            )
        return self._routers[url]

    async def _forward(self, decision: Delegation, payload: bytes, meta: RequestMeta) -> bytes:
        assert decision.url is not None
        headers = {**decision.headers, **({REQUEST_ID_HEADER: meta.request_id} if meta.request_id else {})}
        if (left := meta.timeout()) is not None:  # the delegated hop honours what is left of the deadline
            headers[TIMEOUT_HEADER] = f"{max(left, 0.001):.3f}"
        return await self._router(decision.url).infer(meta.query, payload, headers=headers)

    def advertised_endpoint(self, port: int) -> str:
        cfg = self.settings.replica
        if cfg.advertise:
            return cfg.advertise
        return host_port(self._advertised_host(), port)

    def _advertised_host(self) -> str:
        cfg = self.settings.replica
        if cfg.advertise:
            return cfg.advertise.rsplit(":", 1)[0].strip("[]")
        return "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host

    async def _start_link(self, spec: TransportSpec | None) -> None:
        """Serve the router link when ``[link]`` names an installed network transport."""
        if spec is None:
            log.debug("no router link (link.name = %r): the router uses gRPC", self.settings.link.name)
            return
        options = dict(self.settings.link.options)
        if self.settings.tls.enabled:  # the link in TLS too: it carries what the gRPC port does
            options.update(ssl_server=tls.server_context(self.settings.tls), ssl_client=self.client_tls)
        transport = spec.factory(options)
        try:
            self._link_task, port = await start_link(
                spec, transport, self._link_service, self.settings.replica.host, self.settings.replica.link_port
            )
        except ConfigError as exc:
            raise StartError(f"{exc} (choose another --link-port, or set link.name = 'off')") from None
        self.link = f"{spec.name}://{host_port(self._advertised_host(), port)}"

    async def start(self) -> None:
        cfg = self.settings.replica
        # Import the app here too: a broken --app fails before any process starts.
        app = self.assembly.app
        link = self.assembly.catalog.link(self.settings)
        log.info("serving %d handler(s) from %s", len(app.handlers), self.assembly.app_ref or "installed plugins")
        if not _port_free(cfg.host, cfg.port):
            raise StartError(f"cannot listen on {cfg.host}:{cfg.port}: the port is already in use (choose --port)")
        limit = cfg.max_message_bytes
        # Headroom above the limit so the agent itself can answer with a message naming it.
        self.server = bounded_server(
            max_calls=cfg.max_grpc_calls, receive_bytes=4 * limit, send_bytes=limit + 1024 * 1024
        )
        self.server.add_generic_rpc_handlers(self.agent.generic_handlers())
        self.health = serve_health(self.server, self.agent, app)  # grpc.health.v1 and server reflection
        try:
            port = tls.add_port(self.server, f"{cfg.host}:{cfg.port}", self.settings.tls)
        except RuntimeError as exc:
            raise StartError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
        self.endpoint = self.advertised_endpoint(port)
        try:
            await self.supervisor.start()
        except WorkerStartError as exc:
            await self.supervisor.stop(grace=1.0)
            raise StartError(exc.message) from None
        await self.server.start()
        await self._start_link(link)
        await self._start_metrics()
        self.lifecycle.start_reaper()
        self.agent.ready = True
        self._gc = self._start_object_gc()
        if self.settings.router.url:
            self.registration = Registration(
                AsyncRouterClient(self.settings.router.url, token=self.credentials.cluster, verify=self.client_tls),
                self.replica_id,
                self.endpoint,
                link=self.link or None,
                offers=self.offers,
                in_flight=self.in_flight,
                status=self.status,
                signals=self.signals,
            )
            self.registration.start()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    def _start_object_gc(self) -> asyncio.Task[None] | None:
        """Collect expired objects in the background when a store is configured and TTL is on."""
        cfg = self.settings.objects
        if cfg.ttl_seconds <= 0 or self.settings.source_of("objects.url") == "default":
            log.debug("object collection off (objects.url not configured or objects.ttl_seconds = 0)")
            return None
        return asyncio.create_task(self._collect_objects(cfg.ttl_seconds, cfg.gc_interval_seconds))

    async def _collect_objects(self, ttl: float, interval: float) -> None:
        try:
            store = await asyncio.to_thread(self.assembly.objects)
        except Exception as exc:  # unresolvable store: the replica still serves
            log.warning("object collection off: cannot open %s: %s", self.settings.objects.url, exc)
            return
        log.info("collecting objects older than %gs in %s every %gs", ttl, self.settings.objects.url, interval)
        while True:
            try:
                removed = await asyncio.to_thread(store.cleanup, ttl)
                await asyncio.to_thread(self.metrics.objects_seen, removed, getattr(store, "list", None))
            except Exception as exc:  # a bad pass is reported, the next one tries again
                log.warning(
                    "object collection in %s failed: %s: %s", self.settings.objects.url, type(exc).__name__, exc
                )
            else:
                log.log(
                    logging.INFO if removed else logging.DEBUG,
                    "object collection removed %d object(s) older than %gs from %s",
                    removed,
                    ttl,
                    self.settings.objects.url,
                )
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        self.draining = True
        self.agent.ready = False
        if self.health is not None:
            self.health.shutdown()  # open health watches end now instead of holding the grace period
        if self._gc is not None:
            self._gc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc
        if self.registration is not None:
            await self.registration.stop()  # the router stops sending before we stop serving
        grace = self.settings.replica.shutdown_grace
        drains = [self._link_service.drain(grace)]
        if self.server is not None:
            drains.append(self.server.stop(grace))
        await asyncio.gather(*drains)
        if self._link_task is not None:
            self._link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._link_task
        await self.lifecycle.close()
        await self.supervisor.stop()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        if self.worker_figures is not None:
            self.worker_figures.close()
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
    gc = gc_policy.choice()  # ANYSERVE_GC, read before anything starts
    replica = Replica(settings, app_ref, log_level=log_level)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, replica.request_stop)
    try:
        await replica.start()
        gc_policy.settle(gc)  # started: what start-up made lives as long as the process
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
