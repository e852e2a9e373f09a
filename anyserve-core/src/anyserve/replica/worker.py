"""The worker side: runs an application's handlers for requests a transport delivers.

Plain handlers run in a thread pool sized by the worker's concurrency;
``async def`` handlers run on the worker's event loop under the same bound.
The worker parses the request (the agent never does) and runs the handler
the agent chose (the frame map's ``x-anyserve-handler``: the agent matched
once, so the worker does not score again), then serialises what the
handler returns. A handler that raises is logged here, once, with its
traceback and the request id; its caller gets INTERNAL with the
exception's type and message. The request's deadline reaches the handler
as ``context.deadline`` (``context.cancelled`` turns true once it passes;
a stream's deadline is lifted once its first response is out),
and a cancelled request cancels the handler: ``context.cancelled`` for a
plain function, ``CancelledError`` in an ``async def``. The agent's
liveness probes are answered here, by the event loop, without a handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from anyserve import tracing
from anyserve.app import AnyServe, Handler
from anyserve.context import Caller, Context
from anyserve.errors import AnyServeError, CapabilityNotFound, DeadlineExceeded, HandlerError, InvalidRequest
from anyserve.matching import Matcher
from anyserve.objects import ObjectStore
from anyserve.protocol import RequestMeta
from anyserve.protocol.messages import ModelInferRequest, ModelInferResponse, parse_request
from anyserve.protocol.names import PROBE_KEY
from anyserve.replica.outbox import Outbox
from anyserve.stream import Stream
from anyserve.tensors.outputs import as_raw_outputs, encode_outputs
from anyserve.transport import Query

log = logging.getLogger("anyserve.worker")

_DONE = object()


def describe_offers(app: AnyServe) -> str:
    return "; ".join(f"{dict(h.capability)}{' (stream)' if h.stream else ''}" for h in app.handlers) or "nothing"


class WorkerHost:
    """Implements :class:`anyserve.transport.WorkerService` for one application."""

    def __init__(
        self,
        app: AnyServe,
        matcher: Matcher,
        *,
        worker_id: str = "w0",
        replica_id: str = "",
        concurrency: int = 16,
        objects: Callable[[], ObjectStore] | None = None,
        caller: Caller | None = None,
    ) -> None:
        if not app.handlers:
            raise CapabilityNotFound(f"application {app.name!r} defines no handler")
        self.app = app
        self.matcher = matcher
        self.worker_id = worker_id
        self.replica_id = replica_id
        self._objects = objects
        self._caller = caller
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"anyserve-{worker_id}")
        self._slots = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self._choice: dict[tuple[tuple[tuple[str, str], ...], bool], Handler | None] = {}

    def hello(self) -> dict[str, Any]:
        """Capabilities in handler order (the agent names a handler by its index), and their tensors."""
        return {
            "capabilities": [h.describe() for h in self.app.handlers],
            "tensors": [h.tensors() for h in self.app.handlers],
            "pid": os.getpid(),
            "worker_id": self.worker_id,
            # Requests it serves at once: beyond them the agent counts requests as queued (the load it reports).
            "concurrency": self.concurrency,
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def handler_for(self, query: Query, *, stream: bool) -> Handler:
        """The best-scoring handler of the right kind; cached per query."""
        # Keyed by the query as it arrived (cheap), normalised only on a miss.
        key = (tuple(query.items()), stream)
        if key not in self._choice:
            best: Handler | None = None
            best_score = float("-inf")
            for handler in self.app.handlers:
                if handler.stream != stream:
                    continue
                score = self.matcher.score(handler.capability, query)
                if score is not None and score > best_score:
                    best, best_score = handler, score
            if len(self._choice) > 4096:
                self._choice.clear()
            self._choice[key] = best
        handler = self._choice[key]
        if handler is None:
            kind = "streaming " if stream else ""
            raise CapabilityNotFound(
                f"no {kind}handler matches {dict(query)}; worker {self.worker_id} offers: {describe_offers(self.app)}"
            )
        return handler

    def _chosen(self, meta: RequestMeta, *, stream: bool) -> Handler:
        """The handler the agent named; a direct caller that named none gets the best match."""
        index = meta.handler
        if index is None:
            return self.handler_for(meta.query, stream=stream)
        handlers = self.app.handlers
        if not 0 <= index < len(handlers) or handlers[index].stream != stream:
            raise InvalidRequest(f"worker {self.worker_id} has no {'streaming ' if stream else ''}handler #{index}")
        return handlers[index]

    def _context(self, meta: RequestMeta) -> Context:
        return Context(
            replica_id=self.replica_id,
            query=meta.query,
            objects=self._objects,
            caller=self._caller,
            request_id=meta.request_id,
            deadline=meta.deadline,
        )

    def _failed(self, handler: Handler, meta: RequestMeta, exc: Exception) -> AnyServeError:
        """What the caller gets for a handler's exception; anything unplanned is logged with its traceback."""
        if isinstance(exc, AnyServeError):
            return exc
        log.error(
            "handler %s failed (request %s): %s: %s",
            handler.name,
            meta.request_id or "-",
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return HandlerError.from_exception(exc)

    async def infer(self, payload: bytes, fields: Query) -> bytes:
        if PROBE_KEY in fields:  # the agent's liveness probe: answered by this loop, no handler, no slot taken
            return b""
        meta = RequestMeta.from_metadata(fields.items())
        handler = self._chosen(meta, stream=False)
        sampled = tracing.tracer is not None and tracing.sampled_by_caller(meta.traceparent)  # as the agent decided
        span = self._span(handler, meta) if sampled else None
        traced = None if span is None else tracing.enter(span)
        try:
            request = parse_request(payload)
            # A handler that takes no context gets none built: this is the hot path.
            context = self._context(meta) if handler.arity > 1 else None
            args = (request, context)[: handler.arity]
            async with self._slots:
                try:
                    if handler.is_async:
                        result = await handler.func(*args)
                    else:
                        loop = asyncio.get_running_loop()
                        call = functools.partial(handler.func, *args)
                        if traced is not None:  # in the span, so the handler's own calls continue the trace
                            call = functools.partial(contextvars.copy_context().run, call)
                        result = await loop.run_in_executor(self._executor, call)
                    answer = self._response_bytes(result, handler, request)
                except asyncio.CancelledError:
                    if context is not None:
                        context.cancel()
                    raise
                except Exception as exc:
                    raise self._failed(handler, meta, exc) from None
            if meta.deadline is not None and time.monotonic() >= meta.deadline:
                # The caller has given up (a handler that saw context.cancelled may return anyway): an answer
                # now would race the caller's own timeout, so past the deadline it is the deadline's error, always.
                raise DeadlineExceeded("the request's deadline passed while its handler ran")
            return answer
        except BaseException as exc:
            if traced is not None:
                tracing.failed(traced[0], exc)
            raise
        finally:
            if traced is not None:
                tracing.leave(traced)

    def _span(self, handler: Handler, meta: RequestMeta) -> Any:
        """The worker's span for a sampled request: a child of the agent's through the frame's ``traceparent``."""
        attributes = {"anyserve.worker_id": self.worker_id, "anyserve.handler": handler.name}
        return tracing.start(f"worker {handler.name}", meta, kind="INTERNAL", attributes=attributes)

    @staticmethod
    def _response_bytes(result: Any, handler: Handler, request: ModelInferRequest) -> bytes:
        # `return context.call(...)` hands back what another capability answered.
        result = getattr(result, "response", result)
        if isinstance(result, Mapping):
            result = encode_outputs(result, declared=handler.outputs, request=request)
        elif isinstance(result, ModelInferResponse):
            if request.raw_input_contents:
                as_raw_outputs(result)
        else:
            raise HandlerError(
                f"handler {handler.name} returned {type(result).__name__}; a unary handler returns a mapping "
                "of output name to value, or a ModelInferResponse"
            )
        if not result.id and request.id:
            result.id = request.id
        if not result.model_name:
            result.model_name = request.model_name
        if not result.model_version:
            result.model_version = request.model_version
        return result.SerializeToString()

    async def stream(self, payload: bytes, fields: Query) -> AsyncIterator[bytes]:
        meta = RequestMeta.from_metadata(fields.items())
        handler = self._chosen(meta, stream=True)
        request = parse_request(payload)
        context = self._context(meta)
        loop = asyncio.get_running_loop()
        outbox = Outbox(threaded=not handler.is_async)
        sampled = tracing.tracer is not None and tracing.sampled_by_caller(meta.traceparent)
        traced = self._span(handler, meta) if sampled else None
        stream = Stream(outbox.put, model_name=request.model_name, request_id=request.id, room=outbox.room)
        args = (request, context, stream) if handler.arity == 3 else (request, stream)

        async def produce() -> None:
            async with self._slots:
                try:
                    if handler.is_async:
                        await handler.func(*args)
                    else:
                        call = functools.partial(handler.func, *args)
                        if traced is not None:  # in the span, so the handler's own calls continue the trace
                            call = functools.partial(contextvars.copy_context().run, call)
                        await loop.run_in_executor(self._executor, call)
                    outbox.finish(_DONE)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # reported to the consumer, which re-raises
                    outbox.finish(exc)

        producer = asyncio.create_task(produce(), context=None if traced is None else tracing.context_of(traced))
        try:
            while True:
                item = await outbox.take()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if stream.closed:
                        break
                    if traced is not None:
                        tracing.failed(traced, item)
                    raise self._failed(handler, meta, item) if isinstance(item, Exception) else item
                yield item.SerializeToString()
                if item.error_message:
                    break
                # A stream's deadline bounds its first response: one that has started runs while it produces.
                context.deadline = None
        finally:
            stream.close()
            outbox.close()
            context.cancel()
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            if traced is not None:
                traced.end()
