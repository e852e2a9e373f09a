"""Fixtures for the router's own tests: the app over a fake upstream, on a private plugin manager.

The fake stands in for the replicas' gRPC side (it is the :class:`Upstream`
interface routing talks to). The app runs in a real uvicorn server on a
thread and is spoken to with the standard library's ``http.client``, so these
tests need only anyserve-core, anyserve-router and its declared dependencies.
"""

from __future__ import annotations

import asyncio
import http.client
import json as jsonlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn

import anyserve_encoding_sse.plugin
from anyserve.builtins.subset import SubsetMatcher
from anyserve.config import Settings
from anyserve.plugins import PluginManager, create_plugin_manager
from anyserve.protocol import messages as pb
from anyserve.protocol import names
from anyserve_router.app import create_app
from anyserve_router.registry import ReplicaRegistry
from anyserve_router.upstream import Target, UpstreamError

Behaviour = Callable[[bytes, dict[str, str]], bytes]


def echo(payload: bytes, metadata: dict[str, str]) -> bytes:
    """Answers with the request's id, model name and the metadata it got as parameters."""
    request = pb.ModelInferRequest.FromString(payload)
    response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    for key, value in metadata.items():
        response.parameters[key].string_param = value
    for tensor in request.inputs:
        out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        out.contents.CopyFrom(tensor.contents)
    return response.SerializeToString()


def unreachable(payload: bytes, metadata: dict[str, str]) -> bytes:
    raise UpstreamError("failed to connect to all addresses", code="UNAVAILABLE", unreachable=True)


def token(text: str) -> bytes:
    response = pb.ModelInferResponse(model_name="chat")
    response.outputs.add(name="text_output", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text.encode())
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


def final() -> bytes:
    response = pb.ModelInferResponse()
    response.parameters["triton_final_response"].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


def stream_error(message: str) -> bytes:
    return pb.ModelStreamInferResponse(error_message=message).SerializeToString()


class FakeStream:
    def __init__(self, items: list[bytes | Exception]) -> None:
        self.items = list(items)
        self.cancelled = False

    async def read(self) -> bytes | None:
        if not self.items:
            return None
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeUpstream:
    """Replicas by endpoint: a unary behaviour and a scripted stream each."""

    unary: dict[str, Behaviour] = field(default_factory=dict)
    streams: dict[str, list[bytes | Exception]] = field(default_factory=dict)
    #: What each call got, its request id and deadline left out (``request_ids`` and ``timeouts`` keep those).
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    opened: list[FakeStream] = field(default_factory=list)
    closed: bool = False
    #: Endpoints whose ModelMetadata never answers (a stalled replica).
    stalled: set[str] = field(default_factory=set)

    def _record(self, target: Target, payload: bytes, metadata) -> dict[str, str]:
        md = dict(metadata)
        self.request_ids.append(md.pop("x-request-id", ""))
        self.timeouts.append(md.pop("x-request-timeout", ""))
        self.calls.append((target.endpoint, payload, md))
        return md

    async def infer(self, target: Target, payload: bytes, metadata) -> bytes:
        md = self._record(target, payload, metadata)
        return self.unary.get(target.endpoint, echo)(payload, md)

    def stream(self, target: Target, payload: bytes, metadata) -> FakeStream:
        self._record(target, payload, metadata)
        items = self.streams.get(target.endpoint, [token("a"), token("b"), final()])
        if items and items[0] == "unreachable":
            items = [UpstreamError("failed to connect", code="UNAVAILABLE", unreachable=True)]
        opened = FakeStream(items)
        self.opened.append(opened)
        return opened

    async def metadata(self, target: Target, payload: bytes, metadata) -> bytes:
        self._record(target, payload, metadata)
        if target.endpoint in self.stalled:
            await asyncio.Event().wait()
        request = pb.ModelMetadataRequest.FromString(payload)
        response = pb.ModelMetadataResponse(name=request.name, platform="fake")
        response.inputs.add(name="x", datatype="INT64", shape=[-1])
        return response.SerializeToString()

    async def retain(self, addresses) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def pm() -> PluginManager:
    """Core's built-ins plus the SSE encoding; never the environment's plugins."""
    return create_plugin_manager(entrypoints=False, env={}, plugins=(anyserve_encoding_sse.plugin,))


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@dataclass
class Answer:
    status_code: int
    headers: Any  # http.client.HTTPMessage: case-insensitive, None when absent
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Client:
    """A running router app and a tiny blocking HTTP client for it (one connection per request)."""

    def __init__(self, app: Any) -> None:
        #: Sent with every request unless overridden: the cluster token and a replica key, as a replica sends.
        self.app_state = app.state.anyserve
        token = self.app_state.credentials.cluster
        self.headers = {"Authorization": f"Bearer {token}", names.REPLICA_KEY_HEADER: "tests-replica-key"}
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | Iterable[bytes] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {**self.headers, **(headers or {})}
        body: Any = content.encode() if isinstance(content, str) else content
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        chunked = body is not None and not isinstance(body, bytes)
        if chunked:
            sent["Transfer-Encoding"] = "chunked"
        if params:
            path += "?" + urlencode(params)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent, encode_chunked=chunked)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Answer:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def make_client(pm: PluginManager, upstream: FakeUpstream) -> Iterator[Callable[..., Client]]:
    """``make_client(**router_settings)`` -> a client of a fresh app, served for the test.

    Its replicas heartbeat every 50 ms unless said otherwise, so the app need
    not wait (two heartbeats, by default 2 s) for replicas re-registering
    after its start before it answers a capability nobody offers with 404.
    """
    clients: list[Client] = []

    def make(**router: object) -> Client:
        settings = Settings.model_validate({"router": {"heartbeat_seconds": 0.05, **router}})
        clients.append(Client(create_app(settings, pm, upstream=upstream)))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


def _register(client: Client, replica_id: str, endpoint: str, *capabilities: dict) -> None:
    response = client.post(
        "/register", json={"replica_id": replica_id, "endpoint": endpoint, "capabilities": list(capabilities)}
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def register() -> Callable[..., None]:
    """``register(client, replica_id, endpoint, *capabilities)``, asserting 200."""
    return _register


@pytest.fixture
def wire() -> SimpleNamespace:
    """Builders of what a replica sends back: ``echo``, ``unreachable``, ``token``, ``final``, ``stream_error``,
    and ``stream`` (an upstream stream whose responses have all arrived)."""
    return SimpleNamespace(
        echo=echo, unreachable=unreachable, token=token, final=final, stream_error=stream_error, stream=FakeStream
    )


# -- the registry, on a clock the test moves by hand --------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> ReplicaRegistry:
    return ReplicaRegistry(ttl_seconds=15, clock=clock, wall_clock=lambda: 1_700_000_000.0)


@pytest.fixture
def matcher() -> SubsetMatcher:
    return SubsetMatcher()
