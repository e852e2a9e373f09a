"""Reading a replica's status (``anyserve.ReplicaStatus`` on its gRPC port), as a cluster member.

The status names workers, pids, resources and the router link, so the replica
asks for the cluster token; this presents the one configured, or found in the
state directory (see :mod:`anyserve.credentials`).
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from anyserve import tls
from anyserve.config import Settings, load_settings
from anyserve.credentials import AUTHORIZATION, Credentials
from anyserve.protocol.names import STATUS_SERVICE

STATUS_METHOD = f"/{STATUS_SERVICE}/Get"


def replica_status(endpoint: str, *, timeout: float = 10.0, settings: Settings | None = None) -> dict[str, Any]:
    """The status document of the replica at ``endpoint`` (``host:port``); ``grpc.RpcError`` on failure."""
    settings = settings or load_settings()
    token = Credentials.load(settings).cluster
    metadata = [(AUTHORIZATION, f"Bearer {token}")] if token else []
    credentials = tls.grpc_channel_credentials(settings.tls)
    opened = grpc.insecure_channel(endpoint) if credentials is None else grpc.secure_channel(endpoint, credentials)
    with opened as channel:
        raw = channel.unary_unary(STATUS_METHOD)(b"", timeout=timeout, metadata=metadata)
    return json.loads(raw)
