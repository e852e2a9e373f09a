"""The agent, in process: what a worker is sent, what a caller gets back, and when it is delegated.

:meth:`Agent.infer` and :meth:`Agent.stream` are what both gRPC and the
router link call, so they are driven directly (no gRPC server), in front
of a pool of :class:`FakeConnection` workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, TypeVar, cast

import pytest

from anyserve import hookimpl
from anyserve.builtins.subset import SubsetMatcher
from anyserve.candidates import FAILED, HOT
from anyserve.delegation import Delegation
from anyserve.errors import AnyServeError, CapabilityNotFound, ResourceExhausted, Unavailable
from anyserve.plugins import create_plugin_manager
from anyserve.protocol import RequestMeta, is_final
from anyserve.protocol import messages as pb
from anyserve.replica.agent import LIMIT_SETTING, Agent
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.transport import Query

T = TypeVar("T")
CHAT = {"type": "chat", "model": "llama"}
EMBED = {"type": "embed"}
PAYLOAD = pb.ModelInferRequest(model_name="chat", id="req-1").SerializeToString()
TEXT_IN = {"name": "text", "datatype": "BYTES", "shape": [-1]}
TEXT_OUT = {"name": "reply", "datatype": "BYTES", "shape": [1]}


def chunk(text: str) -> bytes:
    response = pb.ModelInferResponse(id="req-1", model_name=text)
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


class FakeConnection:
    """Stands in for a worker process and the transport to it, which these tests are not about.

    Implements :class:`anyserve.transport.Connection`: answers ``reply``
    (unary) or ``chunks`` then ``error`` (stream), and records each payload
    with the metadata map it came with.
    """

    def __init__(
        self,
        *capabilities: Mapping[str, Any],
        tensors: list[dict[str, Any]] | None = None,
        reply: bytes = b"reply",
        chunks: tuple[bytes, ...] = (),
        error: AnyServeError | None = None,
    ) -> None:
        self.hello: dict[str, Any] = {"capabilities": [dict(c) for c in capabilities], "pid": 1}
        if tensors is not None:
            self.hello["tensors"] = tensors
        self.in_flight = 0
        self.closed = False
        self.reply, self.chunks, self.error = reply, chunks, error
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []
        self.ended_at = 0.0

    async def infer(self, payload: bytes, query: Query) -> bytes:
        self.calls.append(("infer", payload, dict(query)))
        return self.reply

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        self.calls.append(("stream", payload, dict(query)))
        for item in self.chunks:
            yield item
        await asyncio.sleep(0.01)  # the run takes a moment, so "when it ended" is after "when it began"
        self.ended_at = time.monotonic()
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        self.closed = True


def build(
    *connections: FakeConnection, plugins: tuple[object, ...] = (), lifecycle: object = None, **options: Any
) -> Agent:
    pm = create_plugin_manager(entrypoints=False, env={}, plugins=plugins)
    pool = WorkerPool(SubsetMatcher(), pm)
    for index, connection in enumerate(connections):
        pool.add(WorkerSlot.from_connection(f"w{index}", connection))
    options.setdefault("max_message_bytes", 1 << 20)
    return Agent(pool, pm, replica_id="replica-1", lifecycle=lifecycle, **options)  # type: ignore[arg-type]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def stream(agent: Agent, payload: bytes, meta: RequestMeta) -> list[pb.ModelStreamInferResponse]:
    async def collect() -> list[bytes]:
        return [item async for item in agent.stream(payload, meta)]

    return [pb.ModelStreamInferResponse.FromString(item) for item in run(collect())]


# -- what the worker gets ----------------------------------------------------------


def test_the_worker_gets_the_payload_untouched_and_the_chosen_handler() -> None:
    worker = FakeConnection(EMBED, CHAT)
    agent = build(worker)

    reply = run(agent.infer(PAYLOAD, RequestMeta(query={"type": "chat"}, request_id="r-7")))

    assert reply == b"reply"
    assert worker.calls == [
        ("infer", PAYLOAD, {"x-capability-type": "chat", "x-request-id": "r-7", "x-anyserve-handler": "1"})
    ]


def test_a_query_is_derived_from_the_model_name_and_version_when_the_meta_has_none() -> None:
    worker = FakeConnection(EMBED, CHAT)
    payload = pb.ModelInferRequest(model_name="chat", model_version="llama").SerializeToString()

    run(build(worker).infer(payload, RequestMeta()))

    assert worker.calls[0][2] == {"x-capability-type": "chat", "x-capability-model": "llama", "x-anyserve-handler": "1"}


def test_an_unknown_capability_is_not_found_naming_the_query_and_the_offers() -> None:
    agent = build(FakeConnection(CHAT))

    with pytest.raises(CapabilityNotFound) as caught:
        run(agent.infer(PAYLOAD, RequestMeta(query={"type": "vision"})))

    assert caught.value.message == (
        "no capability matches {'type': 'vision'} on replica replica-1; it offers: "
        "{'type': 'chat', 'model': 'llama'}; not delegated: no router is configured to delegate to"
    )


def test_a_unary_request_for_a_streaming_only_capability_says_so() -> None:
    agent = build(FakeConnection({**CHAT, "stream": True}))

    with pytest.raises(CapabilityNotFound, match=r"only as a stream: call ModelStreamInfer"):
        run(agent.infer(PAYLOAD, RequestMeta(query={"type": "chat"})))


def test_a_stream_for_a_unary_only_capability_says_so() -> None:
    [final] = stream(build(FakeConnection(CHAT)), PAYLOAD, RequestMeta(query={"type": "chat"}))

    assert is_final(final.infer_response)
    assert final.error_message == (
        "NOT_FOUND: {'type': 'chat'} is served on replica replica-1 only as a unary call, not as a stream"
    )


def test_an_oversize_request_is_refused_naming_the_setting() -> None:
    worker = FakeConnection(CHAT)
    agent = build(worker, max_message_bytes=8)

    with pytest.raises(ResourceExhausted) as caught:
        run(agent.infer(b"x" * 9, RequestMeta(query={"type": "chat"})))

    assert caught.value.message == f"request of 9 bytes exceeds the limit of 8 bytes set by {LIMIT_SETTING}"
    assert "replica.max_message_bytes" in LIMIT_SETTING
    assert worker.calls == []
    [final] = stream(agent, b"x" * 9, RequestMeta(query={"type": "chat"}))
    assert final.error_message.startswith("RESOURCE_EXHAUSTED: request of 9 bytes")


def test_an_oversize_response_is_refused_too() -> None:
    agent = build(FakeConnection(CHAT, reply=b"y" * 100), max_message_bytes=64)

    with pytest.raises(ResourceExhausted, match=r"^response of 100 bytes exceeds the limit of 64 bytes"):
        run(agent.infer(PAYLOAD, RequestMeta(query={"type": "chat"})))


# -- delegation ----------------------------------------------------------------------


class Delegate:
    """A delegation plugin: records each call and answers ``decision``."""

    def __init__(self, decision: Delegation) -> None:
        self.decision = decision
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def anyserve_delegate(
        self, query: Mapping[str, Any], origin: str, depth: int, router_url: str | None
    ) -> Delegation | None:
        self.calls.append({"query": dict(query), "origin": origin, "depth": depth, "router_url": router_url})
        return self.decision


class Forward:
    """Stands in for the router client a replica forwards delegated requests with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Delegation, bytes, RequestMeta]] = []

    async def __call__(self, decision: Delegation, payload: bytes, meta: RequestMeta) -> bytes:
        self.calls.append((decision, payload, meta))
        return b"answered elsewhere"


def test_a_request_nobody_here_serves_is_forwarded_where_the_delegation_hook_says() -> None:
    decision = Delegation.to("http://other:8000", {"X-Delegated-From": "replica-1"})
    plugin, forward = Delegate(decision), Forward()
    agent = build(FakeConnection(CHAT), plugins=(plugin,), forward=forward, router_url="http://router:8000")
    meta = RequestMeta(query={"type": "vision"}, request_id="r-9")

    assert run(agent.infer(PAYLOAD, meta)) == b"answered elsewhere"
    assert plugin.calls == [
        {"query": {"type": "vision"}, "origin": "replica-1", "depth": 0, "router_url": "http://router:8000"}
    ]
    assert forward.calls == [(decision, PAYLOAD, meta)]


def test_a_refused_delegation_is_not_found_with_the_reason() -> None:
    forward = Forward()
    agent = build(FakeConnection(CHAT), plugins=(Delegate(Delegation.refuse("policy says no")),), forward=forward)

    with pytest.raises(CapabilityNotFound, match=r"it offers: .*; not delegated: policy says no$"):
        run(agent.infer(PAYLOAD, RequestMeta(query={"type": "vision"})))
    assert forward.calls == []


def test_the_built_in_policy_hands_the_request_back_to_the_router_once() -> None:
    forward = Forward()
    agent = build(FakeConnection(CHAT), forward=forward, router_url="http://router:8000")

    run(agent.infer(PAYLOAD, RequestMeta(query={"type": "vision"})))
    [(decision, _, _)] = forward.calls
    assert decision == Delegation.to("http://router:8000", {"X-Delegated-From": "replica-1", "X-Delegation-Depth": "1"})

    again = RequestMeta(query={"type": "vision"}, delegated_from="replica-2", depth=1)
    with pytest.raises(CapabilityNotFound, match=r"not delegated: already delegated 1 time\(s\)"):
        run(agent.infer(PAYLOAD, again))


def test_without_a_router_client_nothing_is_forwarded() -> None:
    agent = build(FakeConnection(CHAT), router_url="http://router:8000")

    with pytest.raises(CapabilityNotFound, match=r"cannot forward requests \(no router client\)"):
        run(agent.infer(PAYLOAD, RequestMeta(query={"type": "vision"})))


# -- streams ----------------------------------------------------------------------


def test_a_stream_run_passes_the_worker_chunks_then_ends_with_a_final_marker() -> None:
    worker = FakeConnection(EMBED, {**CHAT, "stream": True}, chunks=(chunk("a"), chunk("b")))

    responses = stream(build(worker), PAYLOAD, RequestMeta(query={"type": "chat"}))

    assert [r.SerializeToString() for r in responses[:2]] == [chunk("a"), chunk("b")]
    final = responses[-1]
    assert len(responses) == 3
    assert is_final(final.infer_response) and final.infer_response.id == "req-1" and not final.error_message
    assert not any(is_final(r.infer_response) for r in responses[:2])
    assert worker.calls == [("stream", PAYLOAD, {"x-capability-type": "chat", "x-anyserve-handler": "1"})]


def test_an_error_in_a_stream_becomes_its_final_response_with_the_code() -> None:
    worker = FakeConnection({**CHAT, "stream": True}, chunks=(chunk("a"),), error=Unavailable("worker went away"))

    responses = stream(build(worker), PAYLOAD, RequestMeta(query={"type": "chat"}))

    assert len(responses) == 2
    assert responses[-1].error_message == "UNAVAILABLE: worker went away"
    assert is_final(responses[-1].infer_response) and responses[-1].infer_response.id == "req-1"


def test_a_stream_for_an_unknown_capability_is_one_final_not_found() -> None:
    [final] = stream(build(FakeConnection(CHAT)), PAYLOAD, RequestMeta(query={"type": "vision"}))

    assert final.error_message.startswith("NOT_FOUND: no capability matches {'type': 'vision'} on replica replica-1")
    assert is_final(final.infer_response)


def test_a_stream_that_fails_still_counts_as_use_until_it_ends() -> None:
    """Idle reaping reads ``last_used``: a run that ended in an error was in use until it ended."""
    worker = FakeConnection({**CHAT, "stream": True}, chunks=(chunk("a"),), error=Unavailable("worker went away"))
    agent = build(worker)

    stream(agent, PAYLOAD, RequestMeta(query={"type": "chat"}))

    assert agent.pool.slots["w0"].last_used >= worker.ended_at


# -- metadata and readiness -------------------------------------------------------


class FakeContext:
    """Stands in for the gRPC servicer context, which these tests are not about."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: object, message: str) -> None:
        raise AssertionError(f"aborted: {code}: {message}")


def test_model_metadata_lists_the_tensors_the_chosen_handler_declares() -> None:
    tensors = [{"inputs": [], "outputs": []}, {"inputs": [TEXT_IN], "outputs": [TEXT_OUT]}]
    agent = build(FakeConnection(EMBED, CHAT, tensors=tensors))

    assert agent.tensors({"type": "chat"}) == tensors[1]
    request = pb.ModelMetadataRequest(name="chat", version="llama")
    response = run(agent.model_metadata(request, cast(Any, FakeContext())))
    assert (response.name, list(response.versions), response.platform) == ("chat", ["llama"], "anyserve")
    assert [(t.name, t.datatype, list(t.shape)) for t in response.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [("reply", "BYTES", [1])]


def test_tensors_are_empty_when_the_worker_declares_none_or_nothing_matches() -> None:
    agent = build(FakeConnection(CHAT))

    assert agent.tensors({"type": "chat"}) == {"inputs": [], "outputs": []}
    assert agent.tensors({"type": "vision"}) == {"inputs": [], "outputs": []}


def test_servable_and_ready() -> None:
    agent = build(FakeConnection(CHAT), FakeConnection({**EMBED, "stream": True}))

    assert agent.servable({"type": "chat"}) and agent.servable({"type": "embed"})
    assert not agent.servable({"type": "vision"})
    assert not agent.is_ready()  # not serving yet
    agent.ready = True
    assert agent.is_ready()
    empty = build()
    empty.ready = True
    assert not empty.is_ready()  # serving, but nothing to serve


# -- worker classes (a fake lifecycle) ------------------------------------------------


class FakeLifecycle:
    """Stands in for the worker-class lifecycle, which these tests are not about: one class, always startable."""

    def __init__(self, slot: WorkerSlot, handler: int, state: str = HOT) -> None:
        self.slot, self.handler, self.state = slot, handler, state
        self.acquired: list[tuple[dict[str, str], bool, float | None]] = []

    def match(self, query: Query, *, stream: bool) -> object | None:
        return self if not stream and query.get("type") == "chat" else None

    def public_state(self, worker_class: object) -> str:
        return self.state

    async def acquire(self, query: Query, *, stream: bool, timeout: float | None) -> tuple[WorkerSlot, int] | None:
        self.acquired.append((dict(query), stream, timeout))
        return (self.slot, self.handler) if self.match(query, stream=stream) else None


def test_a_request_no_running_worker_serves_is_handed_to_the_lifecycle() -> None:
    worker = FakeConnection(EMBED, CHAT)
    lifecycle = FakeLifecycle(WorkerSlot.from_connection("class-Llama", worker, worker_class="Llama"), handler=1)
    agent = build(lifecycle=lifecycle)

    run(agent.infer(PAYLOAD, RequestMeta(query={"type": "chat"}, deadline=time.monotonic() + 5)))

    [(query, streaming, timeout)] = lifecycle.acquired
    assert (query, streaming) == ({"type": "chat"}, False) and timeout is not None and 4 < timeout <= 5
    fields = worker.calls[0][2]
    assert 4 < float(fields.pop("x-request-timeout")) <= 5  # the deadline travels on
    assert fields == {"x-capability-type": "chat", "x-anyserve-handler": "1"}
    assert agent.servable({"type": "chat"})
    lifecycle.state = FAILED
    assert agent.servable({"type": "chat"}) and not agent.servable({"type": "chat"}, failed=False)
