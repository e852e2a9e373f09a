"""The router -> replica data path: the :class:`Upstream` interface, and raw bytes over pooled gRPC channels.

Routing code sees only the small :class:`Upstream` interface (a unary call,
a stream, housekeeping), so a cheaper transport replaces gRPC here without
touching routing (:mod:`anyserve_router.link_upstream` does, for replicas that
advertise a link). :class:`GrpcUpstream` keeps one ``grpc.aio`` channel per
replica endpoint, created on first use and reused by every request after
(HTTP/2 multiplexes them); nothing is dialled per request and nothing is
parsed: payloads go out and come back as serialised protobuf.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from anyserve.errors import AnyServeError
from anyserve.protocol.names import LOAD_KEY, MODEL_INFER_METHOD, MODEL_METADATA_METHOD, MODEL_STREAM_INFER_METHOD
from anyserve_router.load_reports import PIGGY_BACK_CHARS, piggy_backed

log = logging.getLogger("anyserve.router.upstream")

Metadata = Sequence[tuple[str, str]]
#: Told what a response carried about its replica's load: (replica id, queued, in flight).
LoadSink = Callable[[str, int, int], None]
#: Replicas whose last piggy-backed load is remembered; past it the memory starts over.
MAX_REMEMBERED = 4096

#: Phrases gRPC uses when it could not reach the server at all: the request
#: never arrived, so another replica may safely be tried instead.
_CONNECT_FAILURES = ("failed to connect", "connection refused", "dns resolution failed", "no route to host")

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # A replica restarted on the same port is reachable again within a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Subchannels are otherwise shared process-wide, back-off state included,
    # so a fresh channel would inherit the failed one's back-off.
    ("grpc.use_local_subchannel_pool", 1),
)


@dataclass(frozen=True)
class Target:
    """A replica chosen for a request: its gRPC endpoint and, if it serves one, its link URL.

    An engine server (``protocol`` ``openai``) is reached at ``endpoint``, its
    base URL; ``model`` is the model name it knows the request's model by.
    """

    replica_id: str
    endpoint: str
    link: str | None = None
    protocol: str = "kserve"
    model: str | None = None


class UpstreamError(AnyServeError):
    """A call to a replica failed: ``code`` is the gRPC status name, ``message`` its details.

    ``unreachable`` is true when the replica was never reached (nothing
    arrived there), the only case where routing retries elsewhere.
    """

    def __init__(self, message: str, *, code: str, unreachable: bool = False) -> None:
        super().__init__(message, code=code)
        self.unreachable = unreachable


class UpstreamStream(Protocol):
    """One streaming call: responses as serialised ``ModelStreamInferResponse`` bytes."""

    async def read(self) -> bytes | None:
        """The next response, ``None`` at the end; raises :class:`UpstreamError`."""
        ...

    def cancel(self) -> None:
        """Stop the call (the client went away); idempotent, also after the end."""
        ...


class Upstream(Protocol):
    """What routing needs from a transport to replicas."""

    async def infer(self, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        """Serialised ``ModelInferRequest`` in, serialised ``ModelInferResponse`` out."""
        ...

    def stream(self, target: Target, payload: bytes, metadata: Metadata) -> UpstreamStream:
        """Start a ``ModelStreamInfer`` call carrying one request, already half-closed."""
        ...

    async def metadata(self, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        """Serialised ``ModelMetadataRequest`` in, serialised ``ModelMetadataResponse`` out."""
        ...

    async def retain(self, addresses: Iterable[str]) -> None:
        """Release resources held for endpoints and links not listed (replicas that left)."""
        ...

    async def close(self) -> None: ...


class LoadListener:
    """Hands the load a replica put on a response (:data:`~anyserve.protocol.names.LOAD_KEY`) to a :data:`LoadSink`.

    Each reply carries it, so it is read without a loop of its own: one
    lookup in metadata gRPC has already parsed, and a split.
    """

    sink: LoadSink | None = None

    def report_load(self, sink: LoadSink) -> None:
        """Send what responses carry about their replica's load to ``sink`` (the registry's ``note_load``)."""
        self.sink = sink
        #: Replica id -> the value its last response carried: most answers repeat it, and cost one comparison.
        self._last: dict[str, str] = {}

    def heard(self, replica_id: str, trailing: grpc.aio.Metadata | None) -> None:
        if self.sink is None or not trailing:
            return
        value = trailing.get(LOAD_KEY)
        if value is not None:
            self.heard_value(replica_id, value if isinstance(value, str) else value.decode("ascii", "replace"))

    def heard_value(self, replica_id: str, value: str) -> None:
        """``queued,in_flight`` as an answer carried it (gRPC's trailing metadata, or a link frame)."""
        if self.sink is None or not value or len(value) > PIGGY_BACK_CHARS or self._last.get(replica_id) == value:
            return  # an over-long value (a broken or hostile replica's) is neither parsed nor kept
        if len(self._last) >= MAX_REMEMBERED:
            self._last.clear()
        self._last[replica_id] = value
        load = piggy_backed(value)
        if load is not None:
            self.sink(replica_id, *load)


def _error(exc: grpc.aio.AioRpcError) -> UpstreamError:
    code = exc.code()
    details = exc.details() or ""
    unreachable = code == grpc.StatusCode.UNAVAILABLE and any(p in details.lower() for p in _CONNECT_FAILURES)
    return UpstreamError(details or code.name, code=code.name, unreachable=unreachable)


@dataclass
class _Pooled:
    channel: grpc.aio.Channel
    infer: grpc.aio.UnaryUnaryMultiCallable
    stream: grpc.aio.StreamStreamMultiCallable
    metadata: grpc.aio.UnaryUnaryMultiCallable
    active: int = 0


class _GrpcStream:
    def __init__(
        self, owner: GrpcUpstream, target: Target, pooled: _Pooled, payload: bytes, metadata: Metadata
    ) -> None:
        self._owner = owner
        self._replica_id = target.replica_id
        self._endpoint = target.endpoint
        self._pooled = pooled
        self._call = pooled.stream(iter((payload,)), metadata=metadata)
        self._open = True
        pooled.active += 1

    def _finish(self) -> None:
        if self._open:
            self._open = False
            self._pooled.active -= 1

    async def read(self) -> bytes | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._finish()
            self._owner.heard(self._replica_id, exc.trailing_metadata())
            raise self._owner._failed(self._endpoint, self._pooled, exc) from None
        if message is grpc.aio.EOF:
            self._finish()
            if self._owner.sink is not None:
                self._owner.heard(self._replica_id, await self._call.trailing_metadata())
            return None
        return message

    def cancel(self) -> None:
        if not self._call.done():
            self._call.cancel()
        elif self._open and self._owner.sink is not None:
            # The usual end: routing stops reading at the run's final marker, by when the replica's status (and
            # its load) has mostly arrived too.
            self._owner.heard(self._replica_id, _trailer_of_done(self._call))
        self._finish()


def _trailer_of_done(call: grpc.aio.Call) -> grpc.aio.Metadata | None:
    """The trailing metadata of a call that is done, read without waiting (``cancel`` cannot wait).

    gRPC offers it only as a coroutine, which for a finished call completes
    at its first step; should it ever need to wait, nothing is read.
    """
    reading = call.trailing_metadata()
    try:
        reading.send(None)
    except StopIteration as finished:
        return finished.value
    reading.close()
    return None


class GrpcUpstream(LoadListener):
    """:class:`Upstream` over ``grpc.aio``: one channel per endpoint, reused for every call.

    Create it inside the event loop that will use it (the app's lifespan does).
    Replicas put their load in each call's trailing metadata; with a sink
    (:meth:`report_load`) it goes to the registry.
    """

    def __init__(
        self,
        options: Sequence[tuple[str, object]] = CHANNEL_OPTIONS,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._options = list(options)
        #: With ``[tls]``: channels in TLS, the replica's certificate checked.
        self._credentials = credentials
        self._pool: dict[str, _Pooled] = {}
        #: Channels taken out of the pool that still carry calls; closed once idle.
        self._retired: list[_Pooled] = []

    def _get(self, endpoint: str) -> _Pooled:
        pooled = self._pool.get(endpoint)
        if pooled is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(endpoint, options=self._options)
            else:
                channel = grpc.aio.secure_channel(endpoint, self._credentials, options=self._options)
            pooled = _Pooled(
                channel,
                channel.unary_unary(MODEL_INFER_METHOD),
                channel.stream_stream(MODEL_STREAM_INFER_METHOD),
                channel.unary_unary(MODEL_METADATA_METHOD),
            )
            self._pool[endpoint] = pooled
            log.debug("opened channel to %s", endpoint)
        return pooled

    def _failed(self, endpoint: str, pooled: _Pooled, exc: grpc.aio.AioRpcError) -> UpstreamError:
        """Translate a failure; a channel that could not connect leaves the pool.

        gRPC answers calls on a channel in connection back-off at once with
        UNAVAILABLE, so a replica restarted on the same port would look dead
        until the back-off ran out; the next call dials afresh instead.
        """
        error = _error(exc)
        if error.unreachable and self._pool.get(endpoint) is pooled:
            del self._pool[endpoint]
            self._retired.append(pooled)
        return error

    @property
    def endpoints(self) -> list[str]:
        return sorted(self._pool)

    async def _unary(self, method: str, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        endpoint = target.endpoint
        pooled = self._get(endpoint)
        pooled.active += 1
        try:
            call = getattr(pooled, method)(payload, metadata=metadata)
            response = await call
        except grpc.aio.AioRpcError as exc:
            self.heard(target.replica_id, exc.trailing_metadata())
            raise self._failed(endpoint, pooled, exc) from None
        finally:
            pooled.active -= 1
        if self.sink is not None:
            self.heard(target.replica_id, await call.trailing_metadata())
        return response

    async def infer(self, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        return await self._unary("infer", target, payload, metadata)

    async def metadata(self, target: Target, payload: bytes, metadata: Metadata) -> bytes:
        return await self._unary("metadata", target, payload, metadata)

    def stream(self, target: Target, payload: bytes, metadata: Metadata) -> _GrpcStream:
        return _GrpcStream(self, target, self._get(target.endpoint), payload, metadata)

    async def retain(self, addresses: Iterable[str]) -> None:
        keep = set(addresses)
        for endpoint in [e for e, p in self._pool.items() if e not in keep and p.active == 0]:
            pooled = self._pool.pop(endpoint)
            await pooled.channel.close()
            log.debug("closed channel to %s (replica left)", endpoint)
        idle = [p for p in self._retired if p.active == 0]
        self._retired = [p for p in self._retired if p.active]
        for pooled in idle:
            await pooled.channel.close()

    async def close(self) -> None:
        pool, self._pool = [*self._pool.values(), *self._retired], {}
        self._retired = []
        for pooled in pool:
            await pooled.channel.close()
