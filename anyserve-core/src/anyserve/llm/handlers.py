"""Typed LLM functions -> KServe v2 handlers, so one function serves every protocol.

A generate function (chat or completion) takes the typed request (and,
optionally, the handler :class:`~anyserve.Context`) and yields ``str``
deltas or :class:`~anyserve.llm.Delta` values; it may be a plain generator
(run in the worker's thread pool) or an ``async`` one (run on the worker's
event loop), or return the whole answer at once. From it come two KServe
handlers for the same capability:

- a streaming one, one response per delta, paced by the reader as every
  stream is, and ended by a response carrying ``finish_reason`` and usage;
- a unary one, the deltas joined into one answer.

Usage the function does not report is counted here: one completion token
per non-empty delta, prompt tokens 0. Engines count better, and report it
in their last delta.

Cancellation: a stream whose client left raises ``Cancelled`` from the
next send, which closes the generator; a unary call whose client left
stops at the next delta (the context is cancelled).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from anyserve.context import Context
from anyserve.errors import Cancelled, HandlerError
from anyserve.llm import kserve
from anyserve.llm.types import STOP, Delta, Embeddings, EmbedRequest, GenerateRequest, Usage
from anyserve.protocol import messages as pb
from anyserve.stream import Stream

Reader = Callable[[pb.ModelInferRequest], GenerateRequest]


def _as_delta(item: Any, name: str) -> Delta:
    if isinstance(item, str):
        return Delta(text=item)
    if isinstance(item, Delta):
        return item
    raise HandlerError(f"{name} yielded {type(item).__name__}; an LLM handler yields str or anyserve.llm.Delta")


def _takes_context(func: Callable[..., Any]) -> bool:
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def is_async(func: Callable[..., Any]) -> bool:
    return inspect.isasyncgenfunction(func) or inspect.iscoroutinefunction(func)


class _Run:
    """One generation's bookkeeping: the text so far, the finish reason and usage once known."""

    __slots__ = ("count", "finish", "name", "usage")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.finish: str | None = None
        self.usage: Usage | None = None

    def take(self, item: Any) -> Delta:
        delta = _as_delta(item, self.name)
        if delta.text:
            self.count += 1
        if delta.usage is not None:
            self.usage = delta.usage
        if delta.finish_reason is not None:
            self.finish = delta.finish_reason
        return delta

    def final_usage(self) -> Usage:
        return self.usage if self.usage is not None else Usage(0, self.count)

    def last(self, delta: Delta) -> Delta:
        """``delta`` as the last of the run: finish reason and usage filled in."""
        return Delta(delta.text, delta.finish_reason or STOP, self.final_usage(), delta.logprobs)


def _call(func: Callable[..., Any], typed: Any, context: Context | None, with_context: bool) -> Any:
    return func(typed, context) if with_context else func(typed)


def _sync_items(result: Any) -> Iterable[Any]:
    return result if isinstance(result, Iterator) or inspect.isgenerator(result) else [result]


async def _async_items(result: Any) -> AsyncIterator[Any]:
    if inspect.isawaitable(result):
        yield await result
    elif hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        for item in _sync_items(result):
            yield item


def generate_handlers(func: Callable[..., Any], read: Reader) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(stream_handler, unary_handler)`` for a generate function, matching its sync/async kind."""
    name = getattr(func, "__qualname__", repr(func))
    with_context = _takes_context(func)

    if is_async(func):

        async def stream_async(request: pb.ModelInferRequest, context: Context, stream: Stream) -> None:
            run = _Run(name)
            final = Delta()
            items = _async_items(_call(func, read(request), context, with_context))
            try:
                async for item in items:
                    delta = run.take(item)
                    if delta.finish_reason is not None:
                        final = delta
                        break
                    stream.send(kserve.delta_response(delta, request))
                    await stream.drain()
            finally:
                await items.aclose()
            stream.send(kserve.delta_response(run.last(final), request))

        async def unary_async(request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
            run = _Run(name)
            parts: list[Delta] = []
            items = _async_items(_call(func, read(request), context, with_context))
            try:
                async for item in items:
                    parts.append(run.take(item))
                    if run.finish is not None:
                        break
            finally:
                await items.aclose()
            return kserve.delta_response(run.last(_joined(parts)), request)

        return stream_async, unary_async

    def stream_sync(request: pb.ModelInferRequest, context: Context, stream: Stream) -> None:
        run = _Run(name)
        final = Delta()
        result = _call(func, read(request), context, with_context)
        try:
            for item in _sync_items(result):
                delta = run.take(item)
                if delta.finish_reason is not None:
                    final = delta
                    break
                stream.send(kserve.delta_response(delta, request))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        stream.send(kserve.delta_response(run.last(final), request))

    def unary_sync(request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        run = _Run(name)
        parts: list[Delta] = []
        result = _call(func, read(request), context, with_context)
        try:
            for item in _sync_items(result):
                if context is not None and context.cancelled:
                    raise Cancelled("the client went away")
                parts.append(run.take(item))
                if run.finish is not None:
                    break
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return kserve.delta_response(run.last(_joined(parts)), request)

    return stream_sync, unary_sync


def _joined(parts: list[Delta]) -> Delta:
    """Deltas as one: their text joined, their logprobs concatenated, the last finish reason."""
    logprobs = [entry for part in parts for entry in (part.logprobs or ())]
    finish = next((p.finish_reason for p in reversed(parts) if p.finish_reason), None)
    return Delta("".join(p.text for p in parts), finish, None, logprobs if any(p.logprobs for p in parts) else None)


def _embeddings(result: Any, request: EmbedRequest) -> Embeddings:
    return result if isinstance(result, Embeddings) else Embeddings(result)


def embed_handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """The unary KServe handler for an embed function (``EmbedRequest -> Embeddings | rows``)."""
    with_context = _takes_context(func)

    if is_async(func):

        async def embed_async(request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
            typed = kserve.read_embed(request)
            result = await _call(func, typed, context, with_context)
            return kserve.embeddings_response(_embeddings(result, typed), request, len(typed.texts))

        return embed_async

    def embed_sync(request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return answer_embed(request, func, context)

    return embed_sync


def answer_embed(
    request: pb.ModelInferRequest, func: Callable[..., Any], context: Context | None = None
) -> pb.ModelInferResponse:
    """Answer an embed request with a plain function; worker classes call it from ``handle``."""
    typed = kserve.read_embed(request)
    result = _call(func, typed, context, _takes_context(func))
    return kserve.embeddings_response(_embeddings(result, typed), request, len(typed.texts))
