"""``context.call``: a handler calling another capability through the router.

The call goes to the router, never straight to another replica, so routing,
load and delegation rules apply to it like to any request. It runs
synchronously: plain handlers run in a thread pool, where blocking is
expected; from an ``async def`` handler use ``await asyncio.to_thread(context.call, ...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from anyserve.context import Caller
from anyserve.protocol.messages import ModelInferResponse
from anyserve.results import InferResult
from anyserve.router_client import RouterClient


def router_caller(router_url: str) -> Caller:
    """A ``Context`` caller that sends requests through the router at ``router_url``."""
    lock = threading.Lock()
    clients: list[RouterClient] = []

    def client() -> RouterClient:
        with lock:
            if not clients:
                clients.append(RouterClient(router_url))
            return clients[0]

    def call(
        capability: Mapping[str, Any],
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> InferResult:
        from anyserve.client import build_request  # grpc is imported only by handlers that call

        request = build_request(str(capability.get("type", "")), inputs, parameters=parameters)
        payload = client().infer(capability, request.SerializeToString(), timeout=timeout)
        return InferResult(ModelInferResponse.FromString(payload))

    return call
