"""The router link: the agent served over a network transport, next to gRPC.

A router that finds a ``link`` address in a replica's registration sends
requests there instead of to the gRPC endpoint: the same serialised KServe
v2 messages, carried in the transport's frames, without an HTTP/2 stack on
either side (on one core that hop costs the router and the agent more than
everything else they do per request). The agent is simply the transport's
served side, a :class:`anyserve.transport.WorkerService`: the map a request
frame carries holds what gRPC metadata would (``x-capability-*``,
``x-delegated-from``, ``x-delegation-depth``), and errors cross as codes,
so the router sees exactly what the gRPC path gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from anyserve.credentials import Credentials, link_hello
from anyserve.errors import AnyServeError, ConfigError, Unauthenticated
from anyserve.protocol import RequestMeta
from anyserve.records import TransportSpec
from anyserve.replica.agent import Agent
from anyserve.transport import Query, Transport

log = logging.getLogger("anyserve.link")

#: How often a link port picked at random may turn out taken before giving up.
_PORT_TRIES = 3
#: How long the start-up handshake over the link may take.
_READY_TIMEOUT = 10.0


class LinkService:
    """The agent as a :class:`~anyserve.transport.WorkerService` for the router."""

    def __init__(
        self, agent: Agent, offers: Callable[[], list[dict[str, Any]]], credentials: Credentials | None = None
    ) -> None:
        self.agent = agent
        self.offers = offers
        #: Who may connect: the router, with the cluster token in its hello.
        self.credentials = credentials or Credentials(None, None)
        self.in_flight = 0
        #: Requests received over the link since start (``anyserve status`` shows it).
        self.requests = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self, hello: dict[str, Any]) -> None:
        """Only a caller with the cluster token may send requests here: the link skips the router's checks."""
        token = hello.get("token")
        if not self.credentials.is_cluster(token if isinstance(token, str) else None):
            raise Unauthenticated("the router link needs the cluster token")

    def answer_load(self) -> str:
        """The agent's load, put on each answer over the link, as gRPC puts it in trailing metadata."""
        return self.agent.load_value()

    def hello(self) -> dict[str, Any]:
        return {"replica_id": self.agent.replica_id, "pid": os.getpid(), "capabilities": self.offers()}

    async def infer(self, payload: bytes, fields: Query) -> bytes:
        self._begin()
        try:
            return await self.agent.infer(payload, RequestMeta.from_metadata(fields.items()))
        finally:
            self._end()

    async def stream(self, payload: bytes, fields: Query) -> AsyncIterator[bytes]:
        self._begin()
        try:
            run = self.agent.stream(payload, RequestMeta.from_metadata(fields.items()))
            async with contextlib.aclosing(run):
                async for response in run:
                    yield response
        finally:
            self._end()

    def _begin(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for requests in progress to finish (shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)


def host_port(host: str, port: int | str) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def start_link(
    spec: TransportSpec, transport: Transport, service: LinkService, host: str, port: int
) -> tuple[asyncio.Task[None], int]:
    """Serve ``service`` on ``host:port`` (port 0: a free one); the serving task and its port.

    The transport's ``serve`` runs until cancelled, so it runs in a task.
    Start-up ends with a real handshake over the link, so a replica that
    says it is ready can be reached on it; a failure raises ``ConfigError``.
    """
    tries = 1 if port else _PORT_TRIES
    for attempt in range(tries):
        chosen = port or _free_port(host)
        address = host_port(host, chosen)
        serving = asyncio.create_task(transport.serve(address, service), name=f"anyserve-link:{address}")
        hello = link_hello(service.credentials.cluster)
        probe = asyncio.create_task(transport.connect(address, timeout=_READY_TIMEOUT, hello=hello))
        await asyncio.wait((serving, probe), return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            try:
                connection = await probe
            except AnyServeError as exc:
                serving.cancel()
                raise ConfigError(
                    f"the router link ({spec.name}) on {address} does not answer: {exc.message}"
                ) from None
            await connection.close()
            log.info("router link (%s) listening on %s", spec.name, address)
            return serving, chosen
        probe.cancel()
        with contextlib.suppress(BaseException):
            await probe
        error = serving.exception()
        if attempt + 1 == tries:
            raise ConfigError(f"cannot serve the router link ({spec.name}) on {address}: {error}") from error
        log.debug("link port %d was taken (%s); trying another", chosen, error)
    raise AssertionError("unreachable")
