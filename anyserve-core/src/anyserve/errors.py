"""Errors that cross process boundaries keep their gRPC status code.

A worker raises, the transport carries ``(code, message)``, the agent
re-raises the same class, and the gRPC layer answers with ``code``. Codes are
gRPC status names so no layer needs a translation table of its own.
"""

from __future__ import annotations


class AnyServeError(Exception):
    """Base class of every error anyserve raises on purpose."""

    code: str = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __reduce__(self):  # keep the code when pickled across processes
        return (error_for_code, (self.code, self.message))


class NotFound(AnyServeError):
    """Something the request names does not exist."""

    code = "NOT_FOUND"


class CapabilityNotFound(NotFound):
    """No handler, worker or replica offers the requested capability."""


class ObjectNotFound(NotFound):
    """An object reference names no object (never created, deleted or expired)."""


class AlreadyExists(AnyServeError):
    """Something with the same identity exists already (e.g. a replica id)."""

    code = "ALREADY_EXISTS"


class InvalidRequest(AnyServeError):
    """The request is malformed: bad body, shape, datatype or parameter."""

    code = "INVALID_ARGUMENT"


class InvalidField(InvalidRequest):
    """One field of a request body is wrong; ``param`` names it, as OpenAI errors carry it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param

    def __reduce__(self):  # pickled, it keeps its field
        return (type(self), (self.param, self.message.removeprefix(f"{self.param}: ")))


class ResourceExhausted(AnyServeError):
    """A size or capacity limit was hit; the message names the limit."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(AnyServeError):
    """The worker or replica serving the request went away."""

    code = "UNAVAILABLE"


class Unauthenticated(AnyServeError):
    """No credential, or not one this server accepts (HTTP 401): the message says which is needed."""

    code = "UNAUTHENTICATED"


class PermissionDenied(AnyServeError):
    """The credential is valid but does not allow this (HTTP 403)."""

    code = "PERMISSION_DENIED"


class DeadlineExceeded(AnyServeError):
    """The request's deadline passed before it was served."""

    code = "DEADLINE_EXCEEDED"


class Cancelled(AnyServeError):
    """The caller cancelled the request."""

    code = "CANCELLED"


class ObjectStoreNotConfigured(AnyServeError, RuntimeError):
    """``context.objects`` was used where no object store is configured.

    Also a :class:`RuntimeError`, so handlers written as ``except
    RuntimeError`` around ``context.objects`` keep working. Its code is
    ``FAILED_PRECONDITION``, not ``INTERNAL``: the request is well formed
    and nothing is broken, the replica is just not set up for what the
    handler needs, and retrying cannot help until ``objects.url`` is set.
    The router answers it as HTTP 500 (the code has no entry in
    :data:`HTTP_STATUS`), since the fix is the server's, not the client's.
    """

    code = "FAILED_PRECONDITION"

    def __reduce__(self):  # pickled, it stays this class (still a RuntimeError)
        return (type(self), (self.message,))


class HandlerError(AnyServeError):
    """A user handler raised; the message carries the exception type and text."""

    code = "INTERNAL"

    @classmethod
    def from_exception(cls, exc: BaseException) -> HandlerError:
        return cls(f"{type(exc).__name__}: {exc}")


class ConfigError(Exception):
    """Configuration is invalid or names something that is not installed."""


class PluginError(Exception):
    """A plugin could not be loaded or misbehaved; the message names it."""


_BY_CODE: dict[str, type[AnyServeError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidRequest,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
        PermissionDenied,
    )
}


def error_for_code(code: str, message: str) -> AnyServeError:
    """Rebuild the error a remote side reported as ``(code, message)``."""
    cls = _BY_CODE.get(code, AnyServeError)
    return cls(message, code=code)


def as_anyserve_error(exc: BaseException) -> AnyServeError:
    """What a transport reports for ``exc``: itself, or INTERNAL with type and text."""
    if isinstance(exc, AnyServeError):
        return exc
    return HandlerError.from_exception(exc)


#: gRPC status name -> HTTP status, shared by the router (answering HTTP) and
#: the replica (reading the router's answers), so both agree on every code.
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 413,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 502,
    "DEADLINE_EXCEEDED": 504,
}
_CODE_FOR_HTTP = {status: code for code, status in HTTP_STATUS.items()} | {422: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}


def http_status(code: str) -> int:
    """The HTTP status the router answers for a gRPC status name (500 if unknown)."""
    return HTTP_STATUS.get(code, 500)


def code_for_http(status: int) -> str:
    """The gRPC status name for an HTTP status the router answered with."""
    return _CODE_FOR_HTTP.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
