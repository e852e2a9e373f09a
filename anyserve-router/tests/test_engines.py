"""Engine servers in the registry, in-process: what an engine is added with, and who may be routed to it.

The end-to-end behaviour against a real engine server (llama-cpp-python's)
is pinned in the repository's tests/test_engines.py; here only the checks
and the routing rule, with no process and no network.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import typer

from anyserve.plugins import create_plugin_manager
from anyserve_router.engine_cmd import parse_capability
from anyserve_router.engines import Engines, EngineSpec, relay
from anyserve_router.errors import InvalidRegistration, NoMatch
from anyserve_router.forwarding import Router
from anyserve_router.offers import check_engine_url
from anyserve_router.registry import OPENAI
from anyserve_router.selection import candidates

CHAT = {"type": "chat", "model": "llama-8b"}


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://engine.local:443/v1", "https://engine.local:443"),
    ],
)
def test_engine_urls_are_normalised(url, normalised):
    assert check_engine_url(url) == normalised


@pytest.mark.parametrize(
    ("url", "fault"),
    [
        ("127.0.0.1:8000", "http://"),
        ("ftp://h:1", "http://"),
        ("http://h:1/api/chat", "path"),
        ("http://h", "host:port"),
        ("http://h:0", "port"),
        (None, "string"),
    ],
)
def test_bad_engine_urls_are_refused_saying_why(url, fault):
    with pytest.raises(InvalidRegistration, match=fault):
        check_engine_url(url)


def test_an_engine_spec_gets_an_id_from_its_url_and_checks_its_capabilities():
    spec = EngineSpec.of("http://127.0.0.1:8000")
    assert spec.id == "engine-127-0-0-1-8000" and spec.types == ("chat", "completion")
    assert EngineSpec.of("http://h:1", "vllm-a", [CHAT]).capabilities == (CHAT,)
    with pytest.raises(InvalidRegistration, match="capabilities"):
        EngineSpec.of("http://h:1", capabilities=[{"state": "hot"}])
    with pytest.raises(InvalidRegistration, match="whitespace"):
        EngineSpec.of("http://h:1", "two words")


def test_discovered_models_become_chat_and_completion_offers_both_ways(registry):
    engines = Engines(registry)
    offered = engines._capabilities(EngineSpec.of("http://h:1"), ["a", "b"])
    assert {"type": "chat", "model": "a"} in offered and {"type": "completion", "model": "b", "stream": True} in offered
    assert len(offered) == 8
    fixed = engines._capabilities(EngineSpec.of("http://h:1", capabilities=[CHAT]), ["ignored"])
    assert fixed == [CHAT, {**CHAT, "stream": True}]


def test_an_engine_listing_more_models_than_fit_offers_the_first_ones(registry):
    """An engine listing hundreds of models still registers, within router.max_capabilities (256)."""
    offered = Engines(registry)._capabilities(EngineSpec.of("http://h:1"), [f"m{i}" for i in range(500)])
    assert len(offered) == 256 and {c["model"] for c in offered} == {f"m{i}" for i in range(64)}
    registry.register("many", "http://127.0.0.1:8000", offered, protocol=OPENAI)
    long_host = EngineSpec.of("http://" + ".".join(["h" * 50] * 4) + ":1")
    assert len(long_host.id) <= 128


def test_only_requests_that_allow_openai_entries_are_routed_to_an_engine(registry, matcher):
    registry.register("engine", "http://127.0.0.1:8000", [CHAT, {**CHAT, "stream": True}], protocol=OPENAI)
    assert candidates(registry, CHAT, matcher) == []  # KServe requests: anyserve replicas only
    [found] = candidates(registry, CHAT, matcher, protocols=None)
    assert found.id == "engine" and found.info["protocol"] == OPENAI
    registry.register("replica", "127.0.0.1:50051", [CHAT])
    assert [c.id for c in candidates(registry, CHAT, matcher, stream=False)] == ["replica"]


def test_a_target_for_an_engine_names_the_model_it_knows(registry, matcher):
    registry.register("engine", "http://127.0.0.1:8000", [CHAT], protocol=OPENAI)
    router = Router(registry, matcher, create_plugin_manager(), upstream=None)  # type: ignore[arg-type]
    target = router.pick({"type": "chat"}, protocols=None)
    assert (target.protocol, target.model, target.endpoint) == (OPENAI, "llama-8b", "http://127.0.0.1:8000")
    with pytest.raises(NoMatch):
        router.pick({"type": "chat"})


def test_capabilities_on_the_command_line():
    assert parse_capability("type=chat,model=X,gpus=2,fast=true") == {
        "type": "chat",
        "model": "X",
        "gpus": 2,
        "fast": True,
    }
    with pytest.raises(typer.BadParameter, match="KEY=VALUE"):
        parse_capability("type")


async def _relayed(chunks: list[bytes]) -> list[str]:
    """What happens, in order, as ``relay`` passes ``chunks`` on: each chunk, and when the engine is counted free."""
    events: list[str] = []
    response = httpx.Response(200, stream=httpx.ByteStream(b""))
    response.stream = _Chunks(chunks)  # a body that arrives in these pieces
    async for chunk in relay(response, lambda: events.append("free")):
        events.append(chunk.decode())
    return events


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self):  # type: ignore[override]
        for chunk in self.chunks:
            yield chunk


def test_an_engine_is_counted_free_when_its_done_event_arrives_before_the_client_sees_it():
    # A client sends its next request as soon as it reads [DONE]; by then the router must have
    # uncounted the stream, or least-loaded routing sees the finished stream as load.
    events = asyncio.run(_relayed([b'data: {"x": 1}\n\n', b"data: [DO", b"NE]\n\n"]))
    assert events == ['data: {"x": 1}\n\n', "data: [DO", "free", "NE]\n\n"]


def test_a_stream_without_done_frees_the_engine_once_when_it_ends():
    events = asyncio.run(_relayed([b'data: {"x": 1}\n\n']))
    assert events == ['data: {"x": 1}\n\n', "free"]
