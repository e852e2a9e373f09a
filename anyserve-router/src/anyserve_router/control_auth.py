"""Who may use the router's control plane: replicas with the cluster token, admins with the admin token.

Registration, heartbeats and deregistration need the cluster token; a
replica's own key (``X-Anyserve-Replica-Key``) then binds its id to it (see
:meth:`ReplicaRegistry.register`). Managing engines and deregistering
someone else's replica need the admin token. The tokens come from
:class:`anyserve.credentials.Credentials`; with ``[cluster] auth = "off"``
every check passes.
"""

from __future__ import annotations

from starlette.requests import Request

from anyserve.credentials import AUTHORIZATION, Credentials, from_bearer
from anyserve.errors import PermissionDenied, Unauthenticated
from anyserve.protocol import names
from anyserve_router.errors import InvalidRegistration

#: The longest replica key accepted; the replica makes it (``secrets.token_urlsafe``), 43 characters.
MAX_KEY = 128

_HOW = (
    "send it as 'Authorization: Bearer <token>'; replicas and the CLI on the router's machine read it from "
    "the router's state directory, others from [cluster] token_file or $ANYSERVE_CLUSTER_TOKEN"
)


def presented(request: Request) -> str | None:
    return from_bearer(request.headers.get(AUTHORIZATION))


def require_cluster(request: Request, credentials: Credentials) -> None:
    """The caller holds the cluster (or admin) token, or is refused with 401."""
    if not credentials.is_cluster(presented(request)):
        raise Unauthenticated(f"{request.url.path} needs the cluster token: {_HOW}")


def require_admin(request: Request, credentials: Credentials) -> None:
    """The caller holds the admin token: 401 without any token, 403 with only the cluster token."""
    token = presented(request)
    if credentials.is_admin(token):
        return
    if credentials.is_cluster(token):
        raise PermissionDenied(f"{request.method} {request.url.path} needs the admin token, not the cluster token")
    raise Unauthenticated(f"{request.method} {request.url.path} needs the admin token ([cluster] admin_token_file)")


def replica_key(request: Request) -> str:
    """The replica's own key, required on registration and heartbeats."""
    key = request.headers.get(names.REPLICA_KEY_HEADER)
    if not key:
        raise InvalidRegistration(
            f"missing {names.REPLICA_KEY_HEADER}: a replica sends a secret of its own, which binds its id to it"
        )
    if len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
        raise InvalidRegistration(f"{names.REPLICA_KEY_HEADER} must be at most {MAX_KEY} printable ASCII characters")
    return key
