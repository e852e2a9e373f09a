"""What every HTTP request to the router gets, whichever front serves it: an id, a body ticket, a last-resort 500.

The id is the client's ``X-Request-Id`` when it sent a usable one, else a
new one written into the request's headers, so :class:`RequestMeta` (and
through it the replica) reads the same id. Every response carries it back
in ``X-Request-Id``, and every log line written while the request is served
names it (:class:`RequestIdFilter`, through a context variable: each request
is its own task). The body ticket counts what the request holds of
``router.max_body_bytes_in_flight`` and is given back when it is done.

The router's own failures answer ``{"error": "internal error", "code":
"INTERNAL", "request_id": ...}`` and log the traceback with the id: a
client learns that it failed and what to quote, never a path, a pid or a
replica's name.

With ``router.access_log`` on, :func:`request_context` gives a subclass
that also writes an access-log entry per request
(:mod:`anyserve_router.access_log`); off, it gives this class, so the log
costs the request path nothing at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from anyserve.protocol import dumps, names, new_request_id
from anyserve_router.body_budget import TICKET_SCOPE, BodyBudget
from anyserve_router.inbound import REQUEST_ID_SCOPE

if TYPE_CHECKING:
    from anyserve.config import RouterSettings

log = logging.getLogger("anyserve.router")

#: The id of the request the current task serves, for log lines.
current_request_id: ContextVar[str | None] = ContextVar("anyserve_request_id", default=None)
#: The log format of ``anyserve router``: ``%(request)s`` is `` [request <id>]`` inside a request, else empty.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s"

_ID_HEADER = names.REQUEST_ID_KEY.encode()
#: Longest client request id taken as it is (as :class:`RequestMeta` accepts).
_MAX_ID = 256

App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdFilter(logging.Filter):
    """Adds ``record.request``: `` [request <id>]`` while a request is being served, else ``""``."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        record.request = f" [request {request_id}]" if request_id else ""
        return True


def configure_logging(level: str) -> None:
    """``anyserve router``'s logging: one stream handler whose lines name the request they were written for."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())


def internal_error(request_id: str) -> Response:
    """The answer to a failure of the router itself: that it failed, and the id to quote."""
    body = dumps({"error": "internal error", "code": "INTERNAL", "request_id": request_id})
    return Response(body, status_code=500, media_type=names.JSON, headers={names.REQUEST_ID_HEADER: request_id})


def _client_id(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bool]:
    """The client's ``X-Request-Id`` if usable as it is (printable ASCII, as RequestMeta reads it), and whether
    it sent one at all."""
    for name, value in headers:
        if name == _ID_HEADER:
            value = value.strip()
            return (value if 0 < len(value) <= _MAX_ID and all(0x20 <= b <= 0x7E for b in value) else None), True
    return None, False


class RequestContext:
    """Wraps the router's ASGI dispatch for HTTP requests (see the module's docstring)."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: App) -> None:
        headers = scope["headers"]
        given, sent = _client_id(headers)
        if given is None:
            request_id = new_request_id()
            id_header = (_ID_HEADER, request_id.encode())
            if not sent:  # written into the request, so RequestMeta reads this id too
                if isinstance(headers, list):
                    headers.append(id_header)
                else:
                    scope["headers"] = [*headers, id_header]
            # else: one RequestMeta refuses (400) is left for it to refuse; the answer names this id
        else:
            request_id = given.decode()
            id_header = (_ID_HEADER, given)
        scope[REQUEST_ID_SCOPE] = request_id
        ticket = self.budget.ticket()
        scope[TICKET_SCOPE] = ticket
        token = current_request_id.set(request_id)
        started = completed = False

        async def sending(message: Message) -> None:
            nonlocal started, completed
            if message["type"] == "http.response.start":
                started = True
                out = message.get("headers") or []
                for name, _ in out:  # ASGI header names are lower-case
                    if name == _ID_HEADER:
                        break
                else:
                    message = {**message, "headers": [*out, id_header]}
            elif not message.get("more_body", False):
                completed = True
            await send(message)

        try:
            await app(scope, receive, sending)
        except Exception as exc:
            if completed:
                return  # answered already, by a handler that logged it (Starlette re-raises after answering)
            log.error("internal error in %s %s (request %s)", scope["method"], scope["path"], request_id, exc_info=exc)
            if not started:
                await internal_error(request_id)(scope, receive, send)
            # Started but not finished: returning leaves the response incomplete, and the server closes it.
        finally:
            ticket.give_back()
            current_request_id.reset(token)


def request_context(settings: RouterSettings) -> RequestContext:
    """The router's request context for ``settings``: with an access log when ``access_log`` is not ``off``."""
    budget = BodyBudget(settings.max_body_bytes_in_flight)
    if settings.access_log == "off":
        return RequestContext(budget)
    from anyserve_router import access_log

    return access_log.LoggedRequestContext(budget, access_log.access_logger(settings.access_log))
