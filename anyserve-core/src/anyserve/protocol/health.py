"""Standard gRPC health checking (``grpc.health.v1.Health``) and server reflection for ``grpc.aio`` servers.

Probes that know nothing about KServe — ``grpc_health_probe``, Kubernetes
gRPC probes, load balancers, gRPC's client-side health checking — speak
``grpc.health.v1``; ``grpcurl`` and similar tools find services through
reflection. Both are generic here so any anyserve gRPC port can serve them.

The servicer keeps no table of statuses that something must remember to
update: it asks a *status function* at call time, so the answer always
reflects the server's current state. ``status(service)`` returns True
(SERVING), False (NOT_SERVING) or None (a service this server does not
know). As the health-checking spec says, ``Check`` of an unknown service
fails with NOT_FOUND, while ``Watch`` answers SERVICE_UNKNOWN and keeps
watching, since the service may become known later.

``Watch`` polls the status function (every second by default) and writes a
status only when it differs from the last one written. Each write is awaited
before the next poll, so a watcher that stops reading holds one small
message, never a queue of them; the number of concurrent watchers is capped
as well. ``shutdown()`` ends every watch after a last NOT_SERVING, so open
watches do not hold a graceful server stop for its whole grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from anyserve.protocol.names import INFERENCE_SERVICE

log = logging.getLogger("anyserve.health")

#: ``grpc.health.v1.Health``
HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: ``grpc.reflection.v1alpha.ServerReflection``
REFLECTION_SERVICE: str = reflection.SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

#: ``status(service)``: True = SERVING, False = NOT_SERVING, None = not a service this server knows.
StatusFunction = Callable[[str], bool | None]
#: The service names ``List`` reports (each with its status).
ServicesFunction = Callable[[], Iterable[str]]

WATCH_INTERVAL = 1.0
MAX_WATCHERS = 1024
#: ``List`` may refuse with RESOURCE_EXHAUSTED beyond this many services (the spec allows it).
MAX_LISTED = 10_000


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health`` for ``grpc.aio``, answering from ``status`` at call time."""

    def __init__(
        self,
        status: StatusFunction,
        *,
        services: ServicesFunction = lambda: ("",),
        interval: float = WATCH_INTERVAL,
        max_watchers: int = MAX_WATCHERS,
    ) -> None:
        self.status = status
        self.services = services
        self.interval = interval
        self.max_watchers = max_watchers
        #: Watches open now (what the cap counts; tests read it to see watches end).
        self.watchers = 0
        self._closing: asyncio.Event | None = None
        self._closed = False

    # -- answers ------------------------------------------------------------

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus | None:
        """The status to answer now; None for an unknown service."""
        serving = self.status(service)
        if serving is None:
            return None
        return SERVING if serving and not self._closed else NOT_SERVING

    async def _status_or_abort(
        self, service: str, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse.ServingStatus | None:
        """A failing status function fails the call with INTERNAL naming the error: probes read that as unhealthy."""
        try:
            return self._status(service)
        except Exception as exc:
            log.exception("health status of %r failed", service)
            await context.abort(grpc.StatusCode.INTERNAL, f"health status of {service!r} failed: {exc!r}")
            raise  # abort raises; this keeps type checkers honest

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = await self._status_or_abort(request.service, context)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        names = list(dict.fromkeys(self.services()))
        if len(names) > MAX_LISTED:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{len(names)} services exceed {MAX_LISTED}")
        response = health_pb2.HealthListResponse()
        for name in names:
            status = await self._status_or_abort(name, context)
            if status is not None:  # listed but no longer known: it went away since services() answered
                response.statuses[name].status = status
        return response

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        if self.watchers >= self.max_watchers:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.max_watchers} health watches are already open"
            )
        closing = self._closing_event()
        self.watchers += 1
        try:
            last = None
            while True:
                # Read before the status: a shutdown during the write below must still be
                # followed by one more poll, which is the one that says NOT_SERVING.
                closed = closing.is_set()
                status = await self._status_or_abort(request.service, context)
                current = SERVICE_UNKNOWN if status is None else status
                if current != last:
                    # Awaited: the next status is computed only once this one is on its way.
                    await context.write(health_pb2.HealthCheckResponse(status=current))
                    last = current
                if closed:
                    return  # the last status written was NOT_SERVING (or SERVICE_UNKNOWN)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), self.interval)
        finally:
            self.watchers -= 1

    # -- shutdown -----------------------------------------------------------

    def _closing_event(self) -> asyncio.Event:
        """Created on first use, inside the server's event loop."""
        if self._closing is None:
            self._closing = asyncio.Event()
            if self._closed:
                self._closing.set()
        return self._closing

    def shutdown(self) -> None:
        """From now on every known service is NOT_SERVING, and every open watch ends after saying so.

        Call it as a graceful stop begins: a server waits for open calls, and
        a watch would otherwise last until the grace period ran out.
        """
        self._closed = True
        if self._closing is not None:
            self._closing.set()


def add_health(server: grpc.aio.Server, servicer: HealthServicer) -> None:
    """Serve ``servicer`` as ``grpc.health.v1.Health`` on ``server`` (before it starts)."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)


def enable_reflection(server: grpc.aio.Server, services: Iterable[str] = (INFERENCE_SERVICE,)) -> tuple[str, ...]:
    """Serve gRPC server reflection on ``server`` for ``services``, the health and the reflection services.

    Only protobuf services whose descriptors are in the default pool can be
    resolved; raw-bytes services (``anyserve.ReplicaStatus``) are left out on
    purpose, since listing a name that reflection cannot describe breaks
    tools like ``grpcurl describe``. Returns the names served.
    """
    names = tuple(dict.fromkeys([*services, HEALTH_SERVICE, REFLECTION_SERVICE]))
    reflection.enable_server_reflection(names, server)
    return names
