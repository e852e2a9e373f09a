"""What the registry raises, as anyserve errors so the HTTP layer maps them by code.

Each carries a gRPC status name (``INVALID_ARGUMENT`` -> 400,
``NOT_FOUND`` -> 404, ``ALREADY_EXISTS`` -> 409) so the router needs no
table of its own, the same rule :mod:`anyserve.errors` follows.
"""

from __future__ import annotations

from anyserve.errors import AnyServeError, InvalidRequest, NotFound


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
