"""The router -> replica data path over a replica's link, gRPC where there is none.

A replica may register a ``link`` (``tcp://host:port``): its agent serving
the frame protocol of a network transport plugin. :class:`LinkUpstream`
sends a request there when the router has that transport installed, over
one multiplexed connection per replica, and otherwise over gRPC. The
payloads are the same serialised KServe v2 messages either way; the link
carries the gRPC metadata as the frame's string map, and the replica
answers with the same codes, so routing, retries and delegation cannot
tell the two apart.

A connection that cannot be opened means the request never reached the
replica (``unreachable``: routing may try another); one that breaks while
a request is out means the request may have run (never retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from anyserve.catalog import TRANSPORT
from anyserve.credentials import link_hello
from anyserve.errors import AnyServeError, ConfigError
from anyserve_router.upstream import (
    LoadListener,
    LoadSink,
    Metadata,
    Target,
    Upstream,
    UpstreamError,
    UpstreamStream,
)

if TYPE_CHECKING:
    from anyserve.catalog import Catalog
    from anyserve.config import Selection
    from anyserve.transport import Connection, Transport

log = logging.getLogger("anyserve.router.link")

#: How long dialling a replica's link, handshake included, may take before the replica counts as unreachable.
CONNECT_TIMEOUT = 1.0


def _upstream_error(exc: AnyServeError, connection: Connection, link: str) -> UpstreamError:
    """The replica's own answer as it is; a broken link as a plain fact, its details (pids, addresses) logged."""
    if not connection.closed:
        return UpstreamError(exc.message, code=exc.code)
    log.warning("link %s broke while a request was in flight: %s", link, exc.message)
    return UpstreamError("the connection to the replica broke while the request was in flight", code="UNAVAILABLE")


class _LinkStream:
    """One streaming call over a link; the request goes out on the first ``read``."""

    def __init__(self, owner: LinkUpstream, target: Target, transport: Transport, payload: bytes, md: Metadata) -> None:
        assert target.link is not None
        self._owner = owner
        self._replica_id = target.replica_id
        self._link = target.link
        self._transport = transport
        self._payload = payload
        self._metadata = dict(md)
        self._responses: AsyncIterator[bytes] | None = None
        self._connection: Connection | None = None
        self._finished = False
        self._closing: asyncio.Task[None] | None = None

    async def read(self) -> bytes | None:
        if self._finished:
            return None
        if self._responses is None:
            self._connection = await self._owner.connection(self._link, self._transport)
            self._responses = aiter(self._connection.stream(self._payload, self._metadata))
        assert self._connection is not None
        try:
            chunk = await anext(self._responses)
        except StopAsyncIteration:
            self._finished = True
            self._owner.heard(self._replica_id, self._connection)
            return None
        except AnyServeError as exc:
            self._finished = True
            raise _upstream_error(exc, self._connection, self._link) from None
        # The latest load the replica reported on this connection: a caller may stop reading at a stream's last
        # chunk, before its end frame (and the load on it) is read, so each chunk passes on what came before.
        self._owner.heard(self._replica_id, self._connection)
        return chunk

    def cancel(self) -> None:
        if self._finished or self._responses is None or self._closing is not None:
            self._finished = True
            return
        self._finished = True
        close = getattr(self._responses, "aclose", None)
        if close is not None:  # closing the iterator cancels the request on the replica
            self._closing = asyncio.get_running_loop().create_task(close())
            self._closing.add_done_callback(_quiet)


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a link stream failed: %s", task.exception())


class LinkUpstream:
    """:class:`Upstream` that prefers a replica's link and falls back to ``grpc``.

    Transports are looked up by the link's scheme among the installed network
    transports; a link this router cannot speak goes over gRPC, with a
    warning once per scheme. Create it inside the event loop that uses it.
    """

    def __init__(
        self,
        catalog: Catalog,
        settings: Selection,
        grpc: Upstream,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self._catalog = catalog
        #: With ``[tls]``: links are dialled in TLS, the replica's certificate checked.
        self._ssl = ssl
        #: Presented to every replica's link (the cluster token): links admit cluster members only.
        self._hello = link_hello(token)
        self._settings = settings
        self._grpc = grpc
        self._transports: dict[str, Transport | None] = {}
        self._connections: dict[str, Connection] = {}
        self._dialling: dict[str, asyncio.Future[Connection]] = {}
        self._load = LoadListener()

    def _transport(self, link: str) -> Transport | None:
        scheme = link.partition("://")[0]
        if scheme not in self._transports:
            self._transports[scheme] = self._create(scheme)
        return self._transports[scheme]

    def _create(self, scheme: str) -> Transport | None:
        spec = self._catalog.registries[TRANSPORT.key].records.get(scheme)
        if spec is None or not spec.network:
            log.warning("replicas offer %s:// links, which no installed network transport speaks; using gRPC", scheme)
            return None
        options = dict(self._settings.options) if scheme == self._settings.name else {}
        if self._ssl is not None:
            options["ssl_client"] = self._ssl
        try:
            return spec.factory(options)
        except ConfigError as exc:
            log.warning("cannot use %s:// links (%s); using gRPC", scheme, exc)
            return None

    def report_load(self, sink: LoadSink) -> None:
        """The load a replica puts on its answers goes to ``sink``: over gRPC (trailing metadata) and the link."""
        self._load.report_load(sink)
        listen = getattr(self._grpc, "report_load", None)
        if listen is not None:
            listen(sink)

    def heard(self, replica_id: str, connection: Connection) -> None:
        """The load the replica put on its latest answer over ``connection``, if its transport carries one."""
        value = getattr(connection, "answer_load", "")
        if value:
            self._load.heard_value(replica_id, value)

    async def connection(self, link: str, transport: Transport) -> Connection:
        """The open connection to ``link``, dialled once however many requests wait for it."""
        connection = self._connections.get(link)
        if connection is not None and not connection.closed:
            return connection
        dialling = self._dialling.get(link)
        if dialling is None:
            dialling = asyncio.get_running_loop().create_future()
            self._dialling[link] = dialling
            try:
                # One attempt (timeout 0): a refused connection means nothing listens there (the replica is gone or
                # restarting), final at once rather than retried for a second; CONNECT_TIMEOUT bounds the whole dial.
                connection = await asyncio.wait_for(
                    transport.connect(link.partition("://")[2], timeout=0, hello=self._hello), CONNECT_TIMEOUT
                )
            except (AnyServeError, TimeoutError) as exc:
                message = exc.message if isinstance(exc, AnyServeError) else f"no handshake within {CONNECT_TIMEOUT}s"
                error = UpstreamError(message, code="UNAVAILABLE", unreachable=True)
                dialling.set_exception(error)
                dialling.exception()  # retrieved: the waiters, if any, raise it themselves
                raise error from None
            else:
                self._connections[link] = connection
                dialling.set_result(connection)
                log.debug("opened link %s", link)
                return connection
            finally:
                del self._dialling[link]
        return await asyncio.shield(dialling)

    async def infer(self, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        transport = self._transport(target.link) if target.link else None
        if transport is None:
            return await self._grpc.infer(target, payload, metadata)
        assert target.link is not None
        connection = await self.connection(target.link, transport)
        try:
            answer = await connection.infer(payload, dict(metadata))
        except AnyServeError as exc:
            raise _upstream_error(exc, connection, target.link) from None
        self.heard(target.replica_id, connection)
        return answer

    def stream(self, target: Target, payload: bytes, metadata: Metadata) -> UpstreamStream:
        transport = self._transport(target.link) if target.link else None
        if transport is None:
            return self._grpc.stream(target, payload, metadata)
        assert target.link is not None
        return _LinkStream(self, target, transport, payload, metadata)

    async def metadata(self, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        """Model metadata is not carried by links: it goes over gRPC (rare, and never on the hot path)."""
        return await self._grpc.metadata(target, payload, metadata)

    async def retain(self, addresses: Iterable[str]) -> None:
        keep = set(addresses)
        for link, connection in list(self._connections.items()):
            # A link of a replica that left stays open while it still carries requests.
            if connection.closed or (link not in keep and connection.in_flight == 0):
                del self._connections[link]
                await connection.close()
                log.debug("closed link %s", link)
        await self._grpc.retain(keep)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close()
        await self._grpc.close()
