"""The anyserve router: which replica serves which capability, over HTTP.

:func:`anyserve_router.app.create_app` builds the ASGI service on the replica
registry (:mod:`anyserve_router.registry`): ``POST /register``,
``POST /heartbeat``, ``GET /registry``, ``GET /lookup``, ``POST /infer``,
``POST /infer/stream`` and the KServe v2 REST paths, served by FastAPI except
the inference POSTs, which a thin dispatcher handles ahead of it.
``anyserve router`` runs it. The API is described in docs/protocol.md ("Router HTTP API").

Importing this package stays light (no FastAPI): the app lives in its module.
"""

from anyserve_router.errors import DuplicateReplica, InvalidRegistration, UnknownReplica
from anyserve_router.registry import Lease, ReplicaEntry, ReplicaRegistry
from anyserve_router.version import __version__

__all__ = [
    "DuplicateReplica",
    "InvalidRegistration",
    "Lease",
    "ReplicaEntry",
    "ReplicaRegistry",
    "UnknownReplica",
    "__version__",
]
