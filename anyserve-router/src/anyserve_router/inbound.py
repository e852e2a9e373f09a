"""Reading a request off HTTP: the body within its limit, its format, its :class:`RequestMeta`, and its client leaving.

Headers are read from the raw ASGI list (bytes, lower-case names), once per
request; :meth:`RequestMeta.from_http` checks every value a client wrote.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from anyserve import tracing
from anyserve.delegation import MAX_DELEGATION_DEPTH
from anyserve.errors import Cancelled
from anyserve.metric_names import UNMATCHED
from anyserve.protocol import RequestMeta, names
from anyserve_router.body_budget import TICKET_SCOPE, Ticket
from anyserve_router.errors import BodyTooLarge, NoMatch
from anyserve_router.metrics import ROUTED

if TYPE_CHECKING:
    from anyserve_router.api_keys import ApiKeys
    from anyserve_router.metrics import RouterMetrics

LIMIT_SETTING = "router.max_body_bytes"
#: Where the request's id is kept in the ASGI scope once read, for error answers.
REQUEST_ID_SCOPE = "anyserve.request_id"

T = TypeVar("T")


def request_id(request: Request) -> str | None:
    """The id of a request whose metadata was read, else the client's own ``X-Request-Id``, if any."""
    return request.scope.get(REQUEST_ID_SCOPE) or request.headers.get(names.REQUEST_ID_KEY)


def _too_large(size: int | str, limit: int, setting: str) -> BodyTooLarge:
    return BodyTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes set by {setting}")


async def read_body(request: Request, limit: int, setting: str = LIMIT_SETTING) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (``setting``): by Content-Length first, then while reading.

    The bytes are counted against the router's body budget (the request's
    :class:`~anyserve_router.body_budget.Ticket`, when it has one) before
    they are read: a declared length at once, a chunked body as it comes.
    A client that leaves half-way is :class:`ClientGone`, not a router fault.
    """
    declared = request.headers.get("content-length")
    size_declared = int(declared) if declared is not None and declared.isdigit() else None
    if size_declared is not None and size_declared > limit:
        raise _too_large(declared, limit, setting)
    ticket: Ticket | None = request.scope.get(TICKET_SCOPE)
    if ticket is not None and size_declared is not None:
        ticket.take(size_declared)
        ticket = None  # framing holds the body to its declared length
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(f"more than {limit}", limit, setting)
            if ticket is not None and chunk:
                ticket.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected before sending its whole request body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_protobuf(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() in names.PROTOBUF_TYPES


def read_meta(request: Request, default_query: Mapping[str, str] | None = None) -> RequestMeta:
    """The request's metadata, with a request id (the client's, or a new one).

    ``default_query`` is the query when no ``X-Capability-*`` header names
    one. A delegation depth beyond :data:`MAX_DELEGATION_DEPTH` is refused
    outright: a request travels at most one hop, so it can never loop.
    """
    meta = RequestMeta.from_http(request.scope["headers"], default_query=default_query, new_id=True)
    request.scope[REQUEST_ID_SCOPE] = meta.request_id  # error answers name it too
    if meta.depth > MAX_DELEGATION_DEPTH:
        raise NoMatch(
            f"refusing a request delegated {meta.depth} times (by {meta.delegated_from!r} last): requests are "
            f"delegated at most {MAX_DELEGATION_DEPTH} time, so no replica was found for it"
        )
    return meta


class ClientGone(Cancelled):
    """The HTTP client disconnected before its answer was ready; the call was cancelled."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, cancelled as soon as the client disconnects (the body must be read already).

    One watcher task per call, which cancels this task when the client
    leaves: cheaper than racing two tasks, and the call's own cancellation
    (a deadline, shutdown) still passes through as it is.
    """
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(receive)
        gone = True
        current.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        current.uncancel()
        raise ClientGone("the client disconnected; the request was cancelled") from None
    finally:
        watcher.cancel()


class UnaryResponse(Response):
    """A whole body with its headers given ready as bytes: every routed unary answer.

    starlette's ``Response`` builds its header list from a dict (encoding and
    lower-casing each name, looking for a content length and type) on every
    request; the router's answers always carry the same few, so they are
    built once, as the bytes the server writes.
    """

    def __init__(self, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    make: Callable[[Request], Awaitable[Response]],
    fail: Callable[[Request, Exception], Awaitable[Response]],
    counted: RouterMetrics | None = None,
    front: str = "",
) -> None:
    """Send the response ``make`` gives for the request; ``fail``'s instead if either raises first.

    An error once the response has started (a stream failing mid-way) is
    re-raised as it is: its status line is already on the wire. With
    ``counted``, the request is counted for ``front`` (status, duration,
    in flight) and a streamed body's chunks timed as tokens, here where
    every message passes anyway: no wrapper of its own on the hot path.
    """
    started = False
    status = 500
    begun = time.perf_counter()
    last = 0.0

    async def sending(message: Message) -> None:
        nonlocal started, status, last
        if message["type"] == "http.response.start":
            started = True
            status = message["status"]
        elif counted is not None and message.get("more_body") and message.get("body"):
            last = counted.token(front, begun, last)
        await send(message)

    if counted is not None:
        ROUTED.set(UNMATCHED)
        counted.in_flight[front] += 1
    traced = None if tracing.tracer is None else tracing.enter_http(front, scope)
    request = Request(scope, receive, send)
    try:
        response = await make(request)
        await response(scope, receive, sending)
    except Exception as exc:
        if traced is not None:
            tracing.failed(traced[0], exc)
        if started:
            raise
        response = await fail(request, exc)
        status = response.status_code
        await response(scope, receive, send)
    finally:
        if counted is not None:
            counted.in_flight[front] -= 1
            counted.answered(front, ROUTED.get(), status, time.perf_counter() - begun)
        if traced is not None:
            tracing.leave(traced, status, scope.get(REQUEST_ID_SCOPE))


def authenticate(request: Request, api_keys: ApiKeys | None, query: Mapping[str, str] | None = None) -> None:
    """For data-plane reads that route nothing (model lists, lookups): the caller's key, where keys are needed.

    Routed requests are checked where they are routed (``Router.forward``).
    """
    if api_keys is not None:
        credential = RequestMeta.from_http(request.scope["headers"]).credential
        if query is None:
            api_keys.authenticate(credential)
        else:
            api_keys.check(credential, query)
