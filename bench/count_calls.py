"""How many times each hop parses a request's capability query and runs the matcher, per request.

Starts nothing external: the router app (``anyserve_router.app.create_app``)
runs in this process over a fake upstream that answers an echo (as the
router's test fixtures do), driven as ASGI; the replica side is an
``anyserve.replica.agent.Agent`` over a ``WorkerPool`` whose one worker is a
``WorkerHost`` reached by the inproc transport, driven through its gRPC
entry point (``model_infer``) with the payload and metadata the router
forwarded. The functions that parse or normalise a query, and the matcher's
``score``, are wrapped with counters; each call is booked to the hop it ran
in (router, agent, worker). Requests are KServe v2 JSON, as the bench's JSON
rows send them, in two forms: ``POST /v2/models/echo/infer`` (the model
name is the capability) and ``POST /infer`` with ``X-Capability-Type: echo``.

It runs against this tree or an older one (``PYTHONPATH`` at that tree's
``src`` folders): before the protocol layer, the query was read by
``anyserve.replica.query.from_metadata``/``from_request`` and
``anyserve_router.inbound.capability_query``; whichever names exist are
counted. ::

    .venv/bin/python bench/count_calls.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import importlib
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOPS = ("router", "agent", "worker")
HOP: contextvars.ContextVar[str] = contextvars.ContextVar("hop", default="setup")
COUNTS: Counter[tuple[str, str]] = Counter()

#: (label, module, attribute): plain functions, wrapped wherever a module holds them.
FUNCTIONS = [
    ("anyserve.capability.normalize_query", "anyserve.capability", "normalize_query"),
    ("anyserve.capability.normalize_key", "anyserve.capability", "normalize_key"),
    ("anyserve.protocol.metadata.query_from_request", "anyserve.protocol.metadata", "query_from_request"),
    ("anyserve.replica.query.from_metadata (before)", "anyserve.replica.query", "from_metadata"),
    ("anyserve.replica.query.from_request (before)", "anyserve.replica.query", "from_request"),
    ("anyserve_router.inbound.capability_query (before)", "anyserve_router.inbound", "capability_query"),
]
#: (label, module, class, attribute): classmethods and methods, wrapped on their class.
METHODS = [
    ("RequestMeta.from_http", "anyserve.protocol.metadata", "RequestMeta", "from_http"),
    ("RequestMeta.from_metadata", "anyserve.protocol.metadata", "RequestMeta", "from_metadata"),
    ("matcher: SubsetMatcher.score", "anyserve.builtins.subset", "SubsetMatcher", "score"),
]


def counting(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[(HOP.get(), label)] += 1
        return func(*args, **kwargs)

    return wrapper


def optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def instrument() -> list[str]:
    """Wrap every counted function that exists in this tree; the labels wrapped."""
    wrapped = []
    for label, module_name, attr in FUNCTIONS:
        module = optional(module_name)
        original = getattr(module, attr, None)
        if original is None:
            continue
        wrapper = counting(label, original)
        # `from x import f` copies the reference: replace it in every loaded anyserve module.
        for name, loaded in list(sys.modules.items()):
            if loaded is None or not name.startswith("anyserve"):
                continue
            for key, held in list(vars(loaded).items()):
                if held is original:
                    setattr(loaded, key, wrapper)
        wrapped.append(label)
    for label, module_name, class_name, attr in METHODS:
        cls = getattr(optional(module_name), class_name, None)
        raw = cls.__dict__.get(attr) if cls is not None else None
        if raw is None:
            continue
        if isinstance(raw, classmethod):
            setattr(cls, attr, classmethod(counting(label, raw.__func__)))
        else:
            setattr(cls, attr, counting(label, raw))
        wrapped.append(label)
    return wrapped


# -- the router, in process, over a fake upstream ------------------------------------------


class EchoUpstream:
    """The router's ``Upstream``: answers an echo and keeps what the router forwarded."""

    def __init__(self, pb: Any) -> None:
        self.pb = pb
        self.forwarded: tuple[bytes, list[tuple[str, str]]] | None = None

    async def infer(self, target: Any, payload: bytes, metadata: Any) -> bytes:
        self.forwarded = (payload, [(str(k), str(v)) for k, v in metadata])
        request = self.pb.ModelInferRequest.FromString(payload)
        response = self.pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        for tensor in request.inputs:
            out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            out.contents.CopyFrom(tensor.contents)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response.SerializeToString()

    def stream(self, target: Any, payload: bytes, metadata: Any) -> Any:
        raise NotImplementedError

    async def retain(self, addresses: Any) -> None:
        pass

    async def close(self) -> None:
        pass


async def asgi_post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST through an ASGI app, in process."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {**headers, "content-length": str(len(body))}.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


# -- the replica side, in process ---------------------------------------------------------


class Context:
    """The part of ``grpc.aio.ServicerContext`` the agent's ``model_infer`` uses."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def bench_like_app() -> Any:
    """The capabilities ``bench/servers/bench_app.py`` offers, with an echo."""
    from anyserve import AnyServe, ModelInferResponse

    app = AnyServe("count")

    def echo(request: Any) -> Any:
        response = ModelInferResponse(model_name=request.model_name, id=request.id)
        for tensor in request.inputs:
            out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            out.contents.CopyFrom(tensor.contents)
        return response

    async def echo_async(request: Any) -> Any:
        return echo(request)

    async def tokens(request: Any, stream: Any) -> None:
        stream.send_text("t0")

    app.capability(type="echo")(echo_async)
    app.capability(type="echo", variant="sync")(echo)
    app.capability(type="tokens", stream=True)(tokens)
    app.capability(type="objstat")(echo_async)
    app.capability(type="objinline")(echo_async)
    return app


async def replica(pm: Any, app: Any) -> tuple[Any, asyncio.Task[None]]:
    from anyserve.builtins.inproc import InprocTransport
    from anyserve.builtins.subset import SubsetMatcher
    from anyserve.replica.agent import Agent
    from anyserve.replica.pool import WorkerPool, WorkerSlot
    from anyserve.replica.worker import WorkerHost

    host = WorkerHost(app, SubsetMatcher(), worker_id="w0", replica_id="count")
    original = host.infer

    async def worker_infer(payload: bytes, fields: Any) -> bytes:
        token = HOP.set("worker")
        try:
            return await original(payload, fields)
        finally:
            HOP.reset(token)

    host.infer = worker_infer  # type: ignore[method-assign]
    transport = InprocTransport()
    address = "inproc://count/w0"
    serving = asyncio.create_task(transport.serve(address, host))
    connection = await transport.connect(address)
    pool = WorkerPool(SubsetMatcher(), pm)
    pool.add(WorkerSlot.from_connection("w0", connection))
    agent = Agent(pool, pm, replica_id="count", max_message_bytes=64 << 20)
    agent.ready = True
    return agent, serving


# -- the run ------------------------------------------------------------------------------

FORMS = {
    "POST /v2/models/echo/infer (JSON)": ("/v2/models/echo/infer", {"Content-Type": "application/json"}),
    "POST /infer + X-Capability-Type (JSON)": (
        "/infer",
        {"Content-Type": "application/json", "X-Capability-Type": "echo"},
    ),
}
BODY = json.dumps(
    {"id": "w1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [16], "data": [0.5] * 16}]}
).encode()


def snapshot() -> dict[tuple[str, str], int]:
    counts = dict(COUNTS)
    COUNTS.clear()
    return counts


async def measure(n: int) -> dict[str, Any]:
    import anyserve
    import anyserve_encoding_sse.plugin
    from anyserve.config import Settings
    from anyserve.plugins import create_plugin_manager
    from anyserve_router.app import create_app

    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(anyserve_encoding_sse.plugin,))
    upstream = EchoUpstream(anyserve)
    router = create_app(Settings(), pm, upstream=upstream)
    app = bench_like_app()
    agent, serving = await replica(pm, app)
    wrapped = instrument()
    capabilities = [h.describe() for h in app.handlers]
    registration = json.dumps({"replica_id": "count", "endpoint": "127.0.0.1:1", "capabilities": capabilities})
    status, answer = await asgi_post(router, "/register", registration.encode(), {"Content-Type": "application/json"})
    assert status == 200, answer
    snapshot()
    out: dict[str, Any] = {"anyserve": str(Path(anyserve.__file__).parent), "wrapped": wrapped, "forms": {}}
    for form, (path, headers) in FORMS.items():
        phases = {}
        for phase, count in (("first request", 1), (f"per request, next {n}", n)):
            HOP.set("router")
            for _ in range(count):
                status, answer = await asgi_post(router, path, BODY, headers)
                assert status == 200, answer
            assert upstream.forwarded is not None
            payload, metadata = upstream.forwarded
            HOP.set("agent")
            for _ in range(count):
                await agent.model_infer(payload, Context(metadata))
            HOP.set("setup")
            phases[phase] = {f"{hop}|{label}": c / count for (hop, label), c in snapshot().items()}
        out["forms"][form] = {"phases": phases, "forwarded_metadata": metadata}
    serving.cancel()
    return out


def table(phase: dict[str, float], wrapped: list[str]) -> list[str]:
    lines = ["| function | " + " | ".join(HOPS) + " | total |", "|---|" + "---:|" * (len(HOPS) + 1)]
    for label in wrapped:
        per = [phase.get(f"{hop}|{label}", 0.0) for hop in HOPS]
        cells = [f"{v:g}" if v else "0" for v in per]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sum(per):g} |")
    return lines


def render(data: dict[str, Any]) -> str:
    lines = [f"anyserve from `{data['anyserve']}`", ""]
    for form, found in data["forms"].items():
        for phase, counts in found["phases"].items():
            lines += [f"### {form}: calls {phase}", "", *table(counts, data["wrapped"]), ""]
        lines += [f"metadata the router forwarded: `{found['forwarded_metadata']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per form after the first")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    data = asyncio.run(measure(args.requests))
    print(json.dumps(data, indent=1) if args.json else render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
