"""The gRPC servers anyserve runs (a replica's port, the router's gRPC front), with their bounds.

Every public port bounds what a caller can hold: calls in flight (past
``max_calls`` a call is refused at once with RESOURCE_EXHAUSTED, never
queued), calls per connection, message sizes, and how long an idle
connection stays open.
"""

from __future__ import annotations

import grpc

#: gRPC's message size options are C ints.
GRPC_INT_MAX = 2**31 - 1
#: Calls one connection may carry at once (HTTP/2 streams).
MAX_STREAMS_PER_CONNECTION = 256
#: A connection with no call for this long is closed (the client reconnects when it needs to).
IDLE_CONNECTION_MS = 5 * 60 * 1000


def bounded_server(*, max_calls: int, receive_bytes: int, send_bytes: int | None = None) -> grpc.aio.Server:
    """A ``grpc.aio`` server of these bounds; ``send_bytes=None`` sends messages of any size."""
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", min(receive_bytes, GRPC_INT_MAX)),
            ("grpc.max_send_message_length", -1 if send_bytes is None else min(send_bytes, GRPC_INT_MAX)),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_calls,
    )
