"""What the router raises, as anyserve errors so the HTTP layer maps them by code.

Each carries a gRPC status name (``INVALID_ARGUMENT`` -> 400,
``NOT_FOUND`` -> 404, ``ALREADY_EXISTS`` -> 409, ``RESOURCE_EXHAUSTED`` ->
413, ``UNAVAILABLE`` -> 502) and :func:`anyserve.errors.http_status` turns it
into the HTTP status, so the router keeps no table of its own.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

from anyserve.errors import (
    AnyServeError,
    CapabilityNotFound,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


class InvalidRegistration(InvalidRequest, ValueError):
    """A registration or heartbeat body is malformed; the message says which field and why.

    Also a :class:`ValueError`, so callers validating input generically catch it.
    """


class UnknownReplica(NotFound):
    """No live replica has this id.

    A replica that gets this answer to a heartbeat knows the router forgot it
    (restart, expiry) and registers again.
    """


class DuplicateReplica(AnyServeError):
    """A replica id is already held by a live replica at another endpoint.

    Two processes configured with the same id would otherwise steal each
    other's traffic; the message names both endpoints.
    """

    code = "ALREADY_EXISTS"


class RegistryFull(Unavailable):
    """A new replica id while ``router.max_replicas`` live replicas are registered (503: a place may free up)."""


class WrongReplicaKey(PermissionDenied):
    """A heartbeat or deregistration for a replica id without the key that replica registered with (403)."""


class NoMatch(CapabilityNotFound):
    """No live replica offers a capability matching the request's query (404)."""


class ReplicaUnreachable(Unavailable):
    """The chosen replica did not answer, nor did the one tried instead (502)."""


class BodyTooLarge(ResourceExhausted):
    """The HTTP request body is larger than ``router.max_body_bytes`` (413)."""


class RouterBusy(HTTPException):
    """The router already holds as many request bodies as ``router.max_body_bytes_in_flight`` allows.

    A 503 with ``Retry-After``, not an anyserve error: "not now" has no gRPC
    code the router answers 503 for, and every HTTP front answers an
    HTTPException with its own status and headers.
    """

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(503, message, headers={"Retry-After": str(retry_after)})


class NoCapacity(Unavailable):
    """A capability is on its way (failed for now, its replica re-registering or silent) but none came in time.

    Answered 503 with ``Retry-After`` (``retry_after`` seconds), where a
    capability nobody offers is a 404 (:class:`NoMatch`).
    """

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
