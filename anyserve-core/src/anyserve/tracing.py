"""OpenTelemetry spans for each hop of a request, and the W3C ``traceparent`` that links them.

Tracing is off unless ``[tracing] enabled``. Off, :data:`tracer` stays
``None``, nothing of the OpenTelemetry SDK is imported, and each span point
in the request path costs one read of that attribute. On, :func:`setup`
builds a tracer provider of this process's own (the global one is left to
the application), and the span points use the helpers here.

Each hop continues the trace its caller sent (``traceparent``/``tracestate``
in :class:`~anyserve.protocol.RequestMeta`) and sends on the context of its
*own* current span, so the next hop's span is its child: router -> agent ->
worker, and a replica's delegated call back to the router.

Sampling is decided before anything of the SDK runs (:func:`sampled`): the
caller's decision when its ``traceparent`` carries one, else
``sample_ratio``. A request that is not sampled costs a hop a few string
operations and no span; the first hop passes on a ``traceparent`` saying
"not sampled" (:func:`unsampled_parent`), so no later hop starts a trace of
its own for it. A worker never decides: its agent sends it a ``traceparent``
only for a request it sampled (:func:`sampled_by_caller`).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import fcntl
import itertools
import json
import logging
import os
import random
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from anyserve.errors import ConfigError
from anyserve.protocol import names

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Span, Tracer

    from anyserve.config import TracingSettings
    from anyserve.protocol import RequestMeta

T = TypeVar("T")

#: This process's tracer once :func:`setup` turned tracing on; ``None`` (the one check per request) when off.
tracer: Tracer | None = None
_provider: Any = None
#: The share of requests without a caller's decision that this process samples (``[tracing] sample_ratio``).
_ratio = 1.0
_random = random.random
#: An unsampled request's trace id: this process's random 96 bits, then a count; its parent id is this process's.
_UNSAMPLED_PREFIX = f"00-{random.getrandbits(96):024x}"
_UNSAMPLED_SUFFIX = f"-{random.getrandbits(64) | 1:016x}-00"
_unsampled_count = itertools.count(1)

log = logging.getLogger("anyserve.tracing")

#: The attribute every span of a request carries.
REQUEST_ID = "anyserve.request_id"
ROUTER_SERVICE = "anyserve-router"
REPLICA_SERVICE = "anyserve-replica"
WORKER_SERVICE = "anyserve-worker"
_TRACE_KEYS = (names.TRACEPARENT_KEY, names.TRACESTATE_KEY)


def setup(settings: TracingSettings, default_service: str) -> None:
    """Turn tracing on for this process when the settings say so (once; later calls change nothing)."""
    global tracer, _provider, _ratio
    if not settings.enabled or tracer is not None:
        return
    _ratio = settings.sample_ratio
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    service = settings.service_name or default_service
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if settings.exporter == "file":
        if not settings.file:
            raise ConfigError('[tracing] exporter = "file" needs file = PATH (or $ANYSERVE_TRACING_FILE)')
        # Written as each span ends: a file is for tests and debugging, where a span must be there at once.
        provider.add_span_processor(SimpleSpanProcessor(_file_exporter(settings.file)))
    elif settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(service_name=service, out=sys.stderr)))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                '[tracing] exporter = "otlp" needs the OTLP exporter: pip install "anyserve-core[otlp]" '
                "(opentelemetry-exporter-otlp-proto-http)"
            ) from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    atexit.register(provider.shutdown)
    _provider = provider
    tracer = provider.get_tracer("anyserve")
    where = settings.file if settings.exporter == "file" else settings.endpoint if settings.exporter == "otlp" else ""
    log.info("tracing on: %s spans of %s %s", settings.exporter, service, where)


def _file_exporter(path: str) -> Any:
    """An exporter that appends one JSON object per span per line, safe with other processes on the same file.

    A worker gets its agent's settings, so both may write one file: each
    line is one ``write`` under an exclusive ``flock``, to a file opened
    for appending.
    """
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class FileSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            data = b"".join(json.dumps(span_record(span), separators=(",", ":")).encode() + b"\n" for span in spans)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                os.write(self._fd, data)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    return FileSpanExporter()


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the file exporter writes for a span: ids as hex, as ``traceparent`` writes them."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }


# -- sampling, before any span ------------------------------------------------------


def sampled(traceparent: str) -> bool:
    """Whether this hop records a span: as the caller decided when its ``traceparent`` says, else by the ratio.

    A ``traceparent`` is ``00-<trace id>-<parent id>-<flags>``; the low bit
    of the flags is "sampled" (W3C Trace Context). One that cannot be read
    counts as none, as the propagator would treat it.
    """
    if len(traceparent) == 55 and traceparent[2] == "-" and traceparent[52] == "-":
        return traceparent[54] in "13579bdfBDF"
    return _ratio >= 1.0 or _random() < _ratio


def sampled_by_caller(traceparent: str) -> bool:
    """Whether a hop that never decides for itself records: a worker, whose agent decided for it.

    Only a ``traceparent`` saying "sampled" does; none means the agent did not
    sample the request, and sent nothing rather than a "not sampled" one
    (a field less to write and read per request).
    """
    return len(traceparent) == 55 and traceparent[54] in "13579bdfBDF"


def unsampled_parent() -> str:
    """A new ``traceparent`` saying "not sampled": what the first hop of a request it does not sample sends on.

    Nothing records it, so its ids need only be unique, not unguessable:
    a random prefix per process and a count, with no random draw per request.
    """
    return f"{_UNSAMPLED_PREFIX}{next(_unsampled_count) & 0xFFFFFFFF:08x}{_UNSAMPLED_SUFFIX}"


# -- context <-> traceparent -------------------------------------------------------


def parent_of(traceparent: str, tracestate: str = "") -> Context | None:
    """The remote parent a ``traceparent`` (and ``tracestate``) names; ``None`` when absent or unreadable."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {names.TRACEPARENT_KEY: traceparent}
    if tracestate:
        carrier[names.TRACESTATE_KEY] = tracestate
    return TraceContextTextMapPropagator().extract(carrier)


def current_fields(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, or of the span in ``context``."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier


def with_current(pairs: list[tuple[str, str]], context: Context | None = None) -> list[tuple[str, str]]:
    """Metadata ``pairs`` with the current span's trace context in place of the one that came in."""
    kept = [(key, value) for key, value in pairs if key not in _TRACE_KEYS]
    kept.extend(current_fields(context).items())
    return kept


def headers_with_current(headers: Mapping[str, str] | None) -> dict[str, str]:
    """HTTP ``headers`` with the current span's trace context (a call back to the router).

    With no span recording (the request is not sampled) the call says "not
    sampled", so the router does not start a trace of its own for it.
    """
    sent = {key: value for key, value in (headers or {}).items() if key.lower() not in _TRACE_KEYS}
    sent.update(current_fields() or {names.TRACEPARENT_KEY: unsampled_parent()})
    return sent


# -- spans -------------------------------------------------------------------------


def start(
    name: str,
    meta: RequestMeta | None = None,
    *,
    kind: str = "SERVER",
    attributes: Mapping[str, Any] | None = None,
    traceparent: str = "",
    tracestate: str = "",
    context: Context | None = None,
) -> Span:
    """A started span, a child of the trace ``meta`` (or ``traceparent``, or ``context``) carries; the caller ends it.

    Not made current: :func:`enter` or :func:`within` do that where it is
    safe (never across an async generator's ``yield``).
    """
    from opentelemetry.trace import SpanKind

    assert tracer is not None
    if meta is not None:
        traceparent, tracestate = meta.traceparent, meta.tracestate
    attrs = dict(attributes or {})
    if meta is not None and meta.request_id:
        attrs[REQUEST_ID] = meta.request_id
    parent = context if context is not None else parent_of(traceparent, tracestate)
    return tracer.start_span(name, context=parent, kind=SpanKind[kind], attributes=attrs)


def failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` with the error: status ERROR, described by the error's code (``NOT_FOUND``, ...)."""
    from opentelemetry.trace import Status, StatusCode

    code = getattr(exc, "code", None) or type(exc).__name__
    if not isinstance(code, str):
        code = getattr(code, "name", str(code))
    span.set_attribute("anyserve.error_code", code)
    span.set_status(Status(StatusCode.ERROR, f"{code}: {exc}"[:512]))


def status(span: Span, http_status: int) -> None:
    """An HTTP answer's status on ``span``: 5xx is an error of the server's (the OpenTelemetry convention)."""
    span.set_attribute("http.response.status_code", http_status)
    if http_status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"HTTP {http_status}"))


# -- a hop's span, made current for the request's task -------------------------------

Entered = tuple["Span", object]


def enter(span: Span) -> Entered:
    """Make ``span`` current in this task until :func:`leave`."""
    from opentelemetry import context, trace

    return span, context.attach(trace.set_span_in_context(span))


def enter_http(front: str, scope: Mapping[str, Any]) -> Entered | None:
    """The router's server span for an HTTP request, continuing the client's ``traceparent`` if it sent one.

    ``None`` when the request is not sampled (:func:`sampled`); one that came
    without a ``traceparent`` then gets a "not sampled" one among its headers,
    which every later hop reads.
    """
    fields = dict(scope["headers"])  # one pass, in C
    traceparent = fields.get(b"traceparent", b"").decode("latin-1")
    if not sampled(traceparent):
        if not traceparent:  # the decision travels on in the request's own headers, read into its RequestMeta
            scope["headers"].append((b"traceparent", unsampled_parent().encode()))
        return None
    path = scope.get("path", "")
    attributes = {"http.request.method": scope.get("method", ""), "url.path": path, "anyserve.front": front}
    tracestate = fields.get(b"tracestate", b"").decode("latin-1")
    return enter(start(f"router {front} {path}", traceparent=traceparent, tracestate=tracestate, attributes=attributes))


def leave(entered: Entered, http_status: int | None = None, request_id: str | None = None) -> None:
    """End the span :func:`enter` made current, with the answer's status and the request's id."""
    from opentelemetry import context

    span, token = entered
    if http_status is not None:
        status(span, http_status)
    if request_id:
        span.set_attribute(REQUEST_ID, request_id)
    context.detach(token)  # type: ignore[arg-type]
    span.end()


def routed(span: Span, replica_id: str, capability: str) -> None:
    """Name the replica chosen and the capability it serves (as the metrics label it) on ``span``."""
    span.set_attribute("anyserve.replica_id", replica_id)
    span.set_attribute("anyserve.capability", capability)


def ids(meta: RequestMeta) -> dict[str, str]:
    """The request's id as a span attribute (none when it has none)."""
    return {REQUEST_ID: meta.request_id} if meta.request_id else {}


def start_grpc(method: str, metadata: Sequence[tuple[str, Any]] | None) -> Span | None:
    """The router's server span for a gRPC call (not current: see :func:`within`), continuing the caller's trace.

    ``None`` when the call is not sampled (:func:`sampled`).
    """
    fields = {key: value for key, value in metadata or () if key in _TRACE_KEYS and isinstance(value, str)}
    if not sampled(fields.get(names.TRACEPARENT_KEY, "")):
        return None
    return start(
        f"router grpc {method}",
        traceparent=fields.get(names.TRACEPARENT_KEY, ""),
        tracestate=fields.get(names.TRACESTATE_KEY, ""),
        attributes={"rpc.system": "grpc", "rpc.method": method, "anyserve.front": "grpc"},
    )


async def within(span: Span, work: Awaitable[T]) -> T:
    """``await work`` with ``span`` current, then no longer: for async generators, which must not hold a context."""
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(span))
    try:
        return await work
    finally:
        context.detach(token)


def end(span: Span, code: str) -> None:
    """End ``span`` with a gRPC-style code: ``OK``, or the error's code as its status."""
    if code != "OK":
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("anyserve.error_code", code)
        span.set_status(Status(StatusCode.ERROR, code))
    span.end()


def route(meta: RequestMeta, call: Callable[[Any, list[tuple[str, str]]], T]) -> tuple[Callable[..., T], Span | None]:
    """``call`` (a router's call to a replica) made to carry this hop's trace decision, and its span if it records.

    With the front's span recording, a ``router route`` span (the choice of
    a replica and the call to it, a child of the front's) is started and the
    replica's span will be its child; the caller ends it.
    Otherwise (a gRPC call not sampled, which has no ``traceparent`` to pass
    on) the replica is told "not sampled".
    """
    from opentelemetry import trace

    front = trace.get_current_span()
    if not front.is_recording():
        unsampled = (names.TRACEPARENT_KEY, unsampled_parent())
        return (lambda target, md: call(target, [*md, unsampled])), None
    if meta.request_id:
        front.set_attribute(REQUEST_ID, meta.request_id)
    started = start("router route", kind="CLIENT", attributes=ids(meta), context=trace.set_span_in_context(front))
    return (lambda target, md: call(target, pairs_of(started, list(md)))), started


def leave_with_code(entered: Entered, code: str) -> None:
    """End the span :func:`enter` made current, with a gRPC-style code (see :func:`end`)."""
    from opentelemetry import context

    span, token = entered
    context.detach(token)  # type: ignore[arg-type]
    end(span, code)


def pairs_of(span: Span, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Metadata ``pairs`` carrying ``span``'s trace context: the next hop's parent, ``span`` not being current."""
    from opentelemetry import trace

    return with_current(pairs, trace.set_span_in_context(span))


def context_of(span: Span) -> contextvars.Context:
    """A copy of the current context with ``span`` current in it: for a task that runs in the span."""
    from opentelemetry import context, trace

    copied = contextvars.copy_context()
    copied.run(context.attach, trace.set_span_in_context(span))
    return copied


def shutdown() -> None:
    """Export what is still buffered: for a process that leaves by ``os._exit``, skipping ``atexit``."""
    if _provider is not None:
        _provider.shutdown()
