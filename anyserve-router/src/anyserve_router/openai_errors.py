"""OpenAI's error answers: ``{"error": {"message", "type", "param", "code"}}`` with the status the SDK maps.

Every failure of an OpenAI request becomes one :class:`OpenAIError`
(:func:`as_openai`): a bad field is a 400 naming it, a replica that says
"not now" (``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``) a 503 with
``Retry-After``, others the status their gRPC code maps to; the router's
own bugs are logged and answered "internal error" with the request id.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.responses import Response

from anyserve.errors import AnyServeError, InvalidField, http_status
from anyserve.protocol import dumps, names
from anyserve.protocol.openai import error_body
from anyserve_router.forwarding import ReplicaFailed

log = logging.getLogger("anyserve.router.openai")

#: Seconds a client is told to wait when a model exists but cannot serve right now.
RETRY_AFTER_SECONDS = 1
#: Upstream codes that mean "not now" rather than "broken": answered 503 with Retry-After.
_BUSY_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})


class OpenAIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, retry: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry = retry

    def response(self, request_id: str | None) -> Response:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.retry else {}
        if request_id:
            headers[names.REQUEST_ID_HEADER] = request_id
        body = error_body(self.status, self.message, param=self.param, code=self.code)
        return Response(dumps(body), status_code=self.status, media_type=names.JSON, headers=headers)


def as_openai(exc: Exception, request_id: str) -> OpenAIError:
    """Any failure as the OpenAI error the SDK maps to the right exception class."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, HTTPException):  # the router's own refusals: RouterBusy (503, Retry-After), ...
        return OpenAIError(exc.status_code, str(exc.detail), retry=exc.status_code == 503)
    if isinstance(exc, InvalidField):
        return OpenAIError(400, exc.message, param=exc.param)
    if isinstance(exc, AnyServeError):
        status = http_status(exc.code)
        if (isinstance(exc, ReplicaFailed) and exc.code in _BUSY_CODES) or getattr(exc, "retry_after", None):
            return OpenAIError(503, exc.message, code=exc.code.lower(), retry=True)
        if status >= 500:
            log.warning("OpenAI request %s failed: %s %s", request_id, exc.code, exc.message)
        return OpenAIError(status, exc.message, code=exc.code.lower())
    log.error("internal error in an OpenAI request (request %s)", request_id, exc_info=exc)
    return OpenAIError(500, f"internal error (request {request_id})")
