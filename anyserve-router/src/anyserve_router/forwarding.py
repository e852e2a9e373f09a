"""Choosing the replica for a request and calling it, with one retry when it does not answer.

:mod:`anyserve_router.selection` scores candidates with the configured
matcher and the routing hook picks one (core's default: best score, hot
first, least in flight).
Each forwarded call holds a registry lease, so in-flight counts spread load.
A replica that cannot be reached at all is excluded and the request goes to
another match once; a replica that answers with an error is never retried
(it may have run the request).

Every call has a deadline (:mod:`anyserve_router.deadlines`): the client's,
else ``router.default_deadline_seconds``. It bounds the wait for capacity
(:mod:`anyserve_router.capacity`), then the answer, or a stream's first
response; it travels to the replica as ``x-request-timeout``, and the call
is cancelled there when it passes (504) or when the HTTP client leaves.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from anyserve import tracing
from anyserve.errors import AnyServeError, DeadlineExceeded
from anyserve.matching import Matcher
from anyserve.protocol import RequestMeta, dumps
from anyserve.routing import Pipeline, RouteRequest
from anyserve.routing.pipeline import default_pipeline
from anyserve_router import selection
from anyserve_router.api_keys import ApiKeys
from anyserve_router.capacity import Capacity
from anyserve_router.deadlines import Deadlines
from anyserve_router.errors import NoCapacity, NoMatch, ReplicaUnreachable, UnknownReplica
from anyserve_router.metrics import ROUTED, RouterMetrics
from anyserve_router.no_match import Messages
from anyserve_router.registry import KSERVE, Lease, ReplicaRegistry
from anyserve_router.upstream import Metadata, Target, Upstream, UpstreamError, UpstreamStream

if TYPE_CHECKING:
    from starlette.types import Receive

    from anyserve.plugins import PluginManager

log = logging.getLogger("anyserve.router")

T = TypeVar("T")
#: How long model metadata may take when the request sets no deadline of its own.
METADATA_TIMEOUT = 10.0
#: Seconds a request may take when neither its client nor the settings say (``router.default_deadline_seconds``).
DEFAULT_DEADLINE = 300.0
#: Seconds a client told "not now" (503) is asked to wait before it retries.
RETRY_AFTER_SECONDS = 1


class ReplicaFailed(AnyServeError):
    """A replica answered with an error; code and message are the replica's own.

    ``UNAVAILABLE`` from a replica that answered is "not now" (its worker is
    restarting, or not answering, or its worker class failed): HTTP fronts
    say 503 with ``Retry-After`` (:attr:`retry_after`), not 502, which is
    for a replica that could not be reached at all.
    """

    def __init__(self, message: str, *, code: str, replica_id: str) -> None:
        super().__init__(message, code=code)
        self.replica_id = replica_id
        self.retry_after = RETRY_AFTER_SECONDS if code == "UNAVAILABLE" else None


@dataclass
class Forwarded(Generic[T]):
    """A call that reached a replica: its result, and the lease to release when done with it."""

    target: Target
    result: T
    lease: Lease


class Router:
    """Routes capability queries over a registry to replicas through an :class:`Upstream`."""

    def __init__(
        self,
        registry: ReplicaRegistry,
        matcher: Matcher,
        pm: PluginManager,
        upstream: Upstream,
        *,
        no_match: Literal["404", "any-replica"] = "404",
        deadline_seconds: float = DEFAULT_DEADLINE,
        capacity_wait_seconds: float = 0.0,
        startup_grace_seconds: float = 0.0,
        pipeline: Pipeline | None = None,
        metrics: bool = True,
    ) -> None:
        self.registry = registry
        self.matcher = matcher
        self.pm = pm
        #: Filters, weighted scorers and a picker (``[routing]``); core's defaults unless given.
        self.pipeline = pipeline if pipeline is not None else default_pipeline(pm)
        self.upstream = upstream
        self.no_match = no_match
        #: The data plane's API keys; None: no key is needed (see api_keys.py).
        self.api_keys: ApiKeys | None = None
        #: Each replica's best offer per query, until the registry's offers change.
        self.matches = selection.MatchCache()
        #: Seconds a request may take when its client set no deadline.
        self.deadline_seconds = deadline_seconds
        self.deadlines = Deadlines()
        self.capacity = Capacity(
            registry, matcher, wait_seconds=capacity_wait_seconds, grace_seconds=startup_grace_seconds
        )
        #: What a 404 or a 502 tells the client.
        self.messages = Messages(registry, matcher, self.matches)
        #: Prometheus metrics; the choice below names the routed capability for them (``ROUTED``).
        self.metrics = RouterMetrics(registry, enabled=metrics)
        #: Tracing is on in this process (``[tracing]``): each :meth:`forward` of a sampled request is a span.
        self.traced = False

    # -- choosing ------------------------------------------------------------

    def pick(
        self,
        query: Mapping[str, str],
        *,
        exclude: set[str] | frozenset[str] = frozenset(),
        stream: bool | None = None,
        delegated_from: str | None = None,
        protocols: frozenset[str] | None = selection.KSERVE_ONLY,
        route: RouteRequest | None = None,
    ) -> Target:
        """The replica for ``query`` (not one in ``exclude``), or :class:`NoMatch` explaining why not.

        ``protocols`` says which kinds of entry may serve it (see
        :func:`selection.candidates`): anyserve replicas unless told otherwise.
        ``route`` is what the routing pipeline knows of the request beyond
        its query (session, prompt); just the query and ``stream`` without it.
        """
        chosen = selection.choose(
            self.registry,
            route if route is not None else RouteRequest(query, stream),
            self.matcher,
            self.pipeline,
            exclude=exclude,
            cache=self.matches,
            protocols=protocols,
        )
        if chosen is not None:
            ROUTED.set(self.metrics.label(chosen.capability))
            info = chosen.info
            if info["protocol"] == KSERVE:
                return Target(chosen.id, info["endpoint"], info.get("link"))
            model = chosen.capability.get("model")
            return Target(chosen.id, info["endpoint"], None, info["protocol"], None if model is None else str(model))
        if self.no_match == "any-replica" and delegated_from is None:
            # Some replica's delegation policy decides (``router.no_match = "any-replica"``).
            anyone = self._least_loaded(exclude)
            if anyone is not None:
                return anyone
        raise NoMatch(self.messages.no_match(query, exclude, delegated_from, stream))

    def _least_loaded(self, exclude: set[str] | frozenset[str]) -> Target | None:
        entries = []
        for replica_id in self.registry.live_ids():
            if replica_id in exclude:
                continue
            try:
                entry = self.registry.get(replica_id)
            except UnknownReplica:
                continue
            if entry.protocol == KSERVE:  # an engine server has no delegation policy to decide
                entries.append(entry)
        if not entries:
            return None
        least = min(r.load for r in entries)
        replica = random.choice([r for r in entries if r.load == least])
        return Target(replica.id, replica.endpoint, replica.link)

    def lookup(self, query: Mapping[str, str]) -> Target:
        """Discovery: the replica a request for ``query`` would go to now (no lease taken)."""
        return self.pick(query)

    # -- calling ---------------------------------------------------------------

    async def forward(
        self,
        meta: RequestMeta,
        call: Callable[[Target, Metadata], Awaitable[T]],
        *,
        stream: bool | None = None,
        protocols: frozenset[str] | None = selection.KSERVE_ONLY,
        receive: Receive | None = None,
        route: RouteRequest | None = None,
    ) -> Forwarded[T]:
        """Pick a replica (of ``protocols``), hold a lease on it and ``await call(target, metadata)``.

        ``route`` carries what a front read of the request for routing (the
        OpenAI front: prompt and ``user``); else it is made from ``meta``.

        ``metadata`` is what travels with the request, its deadline as it
        stands when the call goes out. If the replica cannot be reached, it
        is excluded and one other match is tried; if that fails too, or none
        is left, :class:`ReplicaUnreachable` says so (the log names the
        replicas and why). An error the replica itself answered becomes
        :class:`ReplicaFailed` with its code and message. When no replica
        matches but one may come (:class:`~anyserve_router.capacity.Capacity`),
        the request waits for it, then gets :class:`NoCapacity`; else
        :class:`NoMatch`. Past the deadline it is :class:`DeadlineExceeded`,
        and when the HTTP client behind ``receive`` leaves, ``ClientGone``.
        On success the caller owns the lease.
        """
        span = None
        # With tracing on, a request the front sampled (or a gRPC one, whose decision is in the context) gets a
        # ``router route`` span; one whose traceparent says "not sampled" passes it on as it came.
        if self.traced and (not meta.traceparent or tracing.sampled(meta.traceparent)):
            call, span = tracing.route(meta, call)
        deadline = meta.deadline
        if deadline is None:
            deadline = time.monotonic() + self.deadline_seconds
        watch = self.deadlines.watch(deadline, receive)
        try:
            if route is None:
                route = RouteRequest(meta.query, stream, meta.session or None, None, meta.request_id)
            done = await self._forward(meta, deadline, call, stream, protocols, route)
            if span is not None:
                tracing.routed(span, done.target.replica_id, ROUTED.get())
            return done
        except asyncio.CancelledError as exc:
            failure = watch.failure(lambda: self.late(meta, own=meta.deadline is not None))
            if span is not None:
                tracing.failed(span, failure or exc)
            if failure is None:
                raise
            raise failure from None
        except BaseException as exc:
            if span is not None:
                tracing.failed(span, exc)
            raise
        finally:
            self.deadlines.done(watch)
            if span is not None:
                span.end()

    async def _forward(
        self,
        meta: RequestMeta,
        deadline: float,
        call: Callable[[Target, Metadata], Awaitable[T]],
        stream: bool | None,
        protocols: frozenset[str] | None,
        route: RouteRequest,
    ) -> Forwarded[T]:
        if self.api_keys is not None:
            self.api_keys.check(meta.credential, meta.query)
        query, delegated_from = meta.query, meta.delegated_from
        metrics = self.metrics if self.metrics.enabled else None
        if delegated_from and metrics is not None:
            metrics.delegations.inc()
        exclude: set[str] = {delegated_from} if delegated_from else set()
        failed: list[tuple[Target, UpstreamError]] = []
        wait_until: float | None = None
        while len(failed) < 2:
            started = time.perf_counter()
            try:
                target = self.pick(
                    query,
                    exclude=exclude,
                    stream=stream,
                    delegated_from=delegated_from,
                    protocols=protocols,
                    route=route,
                )
                if metrics is not None:
                    metrics.decision.observe(time.perf_counter() - started)
            except NoMatch:
                if failed:
                    break
                version = self.registry.version  # read before any await: no change can slip in between
                if wait_until is None:
                    wait_until = min(time.monotonic() + self.capacity.wait_seconds, deadline)
                await self._await_capacity(meta, stream, exclude, protocols, version, wait_until)
                continue
            try:
                lease = self.registry.acquire(target.replica_id)
            except UnknownReplica:  # deregistered between choice and call
                exclude.add(target.replica_id)
                continue
            try:
                return Forwarded(target, await call(target, meta.to_metadata(deadline=deadline)), lease)
            except UpstreamError as exc:
                lease.release()
                if not exc.unreachable:
                    raise ReplicaFailed(exc.message, code=exc.code, replica_id=target.replica_id) from None
                log.warning(
                    "replica %s at %s did not answer request %s: %s",
                    target.replica_id,
                    target.endpoint,
                    meta.request_id or "-",
                    exc.message,
                )
                failed.append((target, exc))
                exclude.add(target.replica_id)
            except BaseException:
                lease.release()
                raise
        raise ReplicaUnreachable(self.messages.unreachable(meta, len(failed)))

    async def _await_capacity(
        self,
        meta: RequestMeta,
        stream: bool | None,
        exclude: set[str],
        protocols: frozenset[str] | None,
        version: int,
        until: float,
    ) -> None:
        """Return once the registry changed (pick again); raise when nothing is coming, or nothing came in time."""
        query = meta.query
        while True:
            expected = self.capacity.expected(query, stream=stream, exclude=exclude, protocols=protocols)
            if expected is None:
                raise NoMatch(self.messages.no_match(query, exclude, meta.delegated_from, stream))
            reason, holds_until = expected
            if await self.capacity.changed(version, min(until, holds_until)):
                return
            if time.monotonic() >= until:
                break
            # The reason lapsed before the wait did (the startup grace ended): is anything else coming?
        shown = dumps(dict(query)).decode()
        log.warning("no capacity for %s (request %s): %s", shown, meta.request_id or "-", reason)
        raise NoCapacity(
            f"no replica can serve {shown} right now ({reason}); retry shortly (request {meta.request_id or '-'})",
            retry_after=RETRY_AFTER_SECONDS,
        )

    def with_deadline(self, meta: RequestMeta) -> RequestMeta:
        """``meta`` with its deadline settled: the client's, else the router's default from now."""
        if meta.deadline is not None:
            return meta
        return replace(meta, deadline=time.monotonic() + self.deadline_seconds)

    def late(self, meta: RequestMeta, *, own: bool) -> DeadlineExceeded:
        """A call the deadline ended (``own``: the client's, else the router's default): what happened (504)."""
        shown = dumps(dict(meta.query)).decode()
        log.warning("request %s for %s passed its deadline", meta.request_id or "-", shown)
        where = "the client's" if own else "the router's default, router.default_deadline_seconds"
        return DeadlineExceeded(
            f"no answer for {shown} before the request's deadline ({where}) passed (request {meta.request_id or '-'})"
        )

    async def infer(
        self, meta: RequestMeta, payload: bytes, receive: Receive | None = None, route: RouteRequest | None = None
    ) -> tuple[Target, bytes]:
        """Unary ModelInfer: serialised request in, the serving replica and serialised response out.

        ``receive`` is the HTTP request's: a client that leaves cancels the call. ``route``: as for :meth:`forward`.
        """
        upstream = self.upstream

        def call(target: Target, md: Metadata) -> Awaitable[bytes]:
            return upstream.infer(target, payload, md)

        done = await self.forward(meta, call, stream=False, receive=receive, route=route)
        done.lease.release()
        return done.target, done.result

    async def open_stream(
        self, meta: RequestMeta, payload: bytes, receive: Receive | None = None
    ) -> Forwarded[tuple[UpstreamStream, bytes | None]]:
        """Start a ModelStreamInfer call and wait for its first response (``None``: it ended at once).

        Waiting for the first response lets "not found" or "unreachable" be
        answered as such (and the unreachable retried) instead of inside a
        stream already started. The deadline bounds this wait only: a stream
        that has started runs as long as it produces, until its client leaves.
        The caller owns the stream and the lease.
        """
        return await self.forward(meta, self.stream_call(payload), stream=True, receive=receive)

    def stream_call(
        self, payload: bytes
    ) -> Callable[[Target, Metadata], Awaitable[tuple[UpstreamStream, bytes | None]]]:
        """The call :meth:`open_stream` forwards: start the stream, wait for its first response."""

        async def call(target: Target, md: Metadata) -> tuple[UpstreamStream, bytes | None]:
            stream = self.upstream.stream(target, payload, md)
            try:
                return stream, await stream.read()
            except BaseException:
                stream.cancel()
                raise

        return call

    async def model_metadata(self, meta: RequestMeta, payload: bytes) -> tuple[Target, bytes]:
        """ModelMetadata from a replica serving ``meta.query`` (either kind): request bytes in, response bytes out.

        Bounded by the request's deadline, or :data:`METADATA_TIMEOUT`: a
        replica that never answers must not hold an HTTP request for ever.
        """
        limit = meta.timeout() or METADATA_TIMEOUT
        upstream = self.upstream

        def call(target: Target, md: Metadata) -> Awaitable[bytes]:
            return upstream.metadata(target, payload, md)

        try:
            done = await self.forward(replace(meta, deadline=time.monotonic() + limit), call)
        except DeadlineExceeded:
            shown = dumps(dict(meta.query)).decode()
            raise DeadlineExceeded(
                f"the replica serving {shown} gave no model metadata within {limit:.1f}s "
                f"(request {meta.request_id or '-'})"
            ) from None
        done.lease.release()
        return done.target, done.result
