"""The anyserve router: which replica serves which capability.

Today this is the replica registry (:mod:`anyserve_router.registry`); the
HTTP service in front of it (``POST /register``, ``GET /registry``,
``POST /infer``, ``POST /infer/stream``) builds on it next.
"""

from anyserve_router.errors import DuplicateReplica, InvalidRegistration, UnknownReplica
from anyserve_router.registry import Lease, Replica, ReplicaRegistry
from anyserve_router.version import __version__

__all__ = [
    "DuplicateReplica",
    "InvalidRegistration",
    "Lease",
    "Replica",
    "ReplicaRegistry",
    "UnknownReplica",
    "__version__",
]
