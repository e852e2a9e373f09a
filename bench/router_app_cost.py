"""The router application's own CPU per request, in-process: no sockets, no uvicorn, no replica.

The app from ``create_app`` over an upstream that answers an echo at once
(a fake: the replica is not what this measures), driven as ASGI with the
protobuf ``POST /infer`` of run.py's W1, one request after another. What it
prints is the routing layer's cost alone (request context, metadata,
routing, deadlines, answer), steadier than a throughput run on a shared
machine, so a change's cost can be read in microseconds. Run it with
another tree's Python to compare (bench/hardening_bench.py builds one)::

    .venv/bin/python bench/router_app_cost.py [requests]
    bench/.cache/base-<commit>/.venv/bin/python bench/router_app_cost.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import anyserve_encoding_sse.plugin
from anyserve.config import load_settings
from anyserve.plugins import create_plugin_manager
from anyserve.protocol import messages as pb
from anyserve_router.app import create_app


class EchoUpstream:
    """Stands in for the replicas (not what this measures): every call answers at once."""

    answer = pb.ModelInferResponse(model_name="echo").SerializeToString()

    async def infer(self, target: Any, payload: bytes, metadata: Any) -> bytes:
        return self.answer

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def model_metadata(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def retain(self, *args: Any) -> None:
        pass

    async def close(self) -> None:
        pass


def w1_request() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    request = pb.ModelInferRequest(model_name="echo", id="1")
    request.inputs.add(name="x", datatype="INT64", shape=[1]).contents.int64_contents.append(1)
    body = request.SerializeToString()
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/x-protobuf"),
        (b"accept", b"application/x-protobuf"),
        (b"content-length", str(len(body)).encode()),
        (b"x-capability-type", b"echo"),
    ]
    return body, headers


async def measure(requests: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per request, after 500 to warm up."""
    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(anyserve_encoding_sse.plugin,))
    app = create_app(load_settings(), pm, upstream=EchoUpstream())  # ANYSERVE_* from the environment
    app.state.anyserve.registry.register("r1", "127.0.0.1:1", [{"type": "echo"}])
    body, headers = w1_request()

    async def one() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/infer", "raw_path": b"/infer", "root_path": "", "query_string": b"", "headers": list(headers),
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080),
        }  # fmt: skip
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never leaves
            raise AssertionError

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    for _ in range(500):
        await one()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await one()
    return (time.process_time() - cpu) / requests * 1e6, (time.perf_counter() - wall) / requests * 1e6


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    cpu, wall = asyncio.run(measure(requests))
    print(f"router app: {cpu:.1f} µs CPU, {wall:.1f} µs wall per request ({requests} requests)")


if __name__ == "__main__":
    main()
