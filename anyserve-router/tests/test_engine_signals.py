"""Reading engine servers' load: the metric names of vLLM and llama.cpp, bounds, and endpoints not served.

The engine here is a small stub HTTP server on a real socket: it answers
what vLLM's ``/metrics`` answers (vLLM itself is not installed here, and
its names are what these tests are about) and misbehaves on demand. The
real llama-server is read end to end in the repository's
tests/test_load_signals.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from anyserve.routing.held import EngineCache
from anyserve_router import engine_signals
from anyserve_router.engine_signals import EnginePoller, metrics_signals, slots_signals
from anyserve_router.engines import Engines, EngineSpec

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.5
# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="llama"} 4.0
vllm:e2e_request_latency_seconds_count{model_name="llama"} 4.0
"""


class Stub(BaseHTTPRequestHandler):
    """The engine: ``answers`` maps a path to (status, body); every request is counted in ``asked``."""

    answers: dict[str, tuple[int, bytes]] = {}
    asked: Counter[str] = Counter()
    delay = 0.0

    def do_GET(self) -> None:
        type(self).asked[self.path] += 1
        if self.path == "/slow":
            time.sleep(self.delay)
        status, body = self.answers.get(self.path, (404, b'{"detail":"Not Found"}'))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[type[Stub]]:
    handler = type("Engine", (Stub,), {"answers": {}, "asked": Counter()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_vllm_metrics_become_running_queued_and_cache_use():
    assert metrics_signals(VLLM_METRICS) == {"running": 4, "queued": 2, "cache_use": 0.5}
    older = "vllm:gpu_cache_usage_perc 0.75\nvllm:num_requests_running 1\n"
    assert metrics_signals(older) == {"running": 1, "cache_use": 0.75}


def test_llama_server_metrics_and_slots_become_signals():
    text = "llamacpp:requests_processing 2\nllamacpp:requests_deferred 5\nllamacpp:kv_cache_usage_ratio 0.1\n"
    assert metrics_signals(text) == {"running": 2, "queued": 5, "cache_use": 0.1}
    slots = b'[{"id":0,"is_processing":true},{"id":1,"is_processing":false},{"id":2,"state":1}]'
    assert slots_signals(slots) == {"slots": 3, "running": 2}


def test_slots_listing_their_prompts_become_the_prompts_signal():
    # what llama-server lists with LLAMA_SERVER_SLOTS_DEBUG=1: a used slot, an emptied one, one never used
    slots = json.dumps([
        {"id": 0, "is_processing": False, "n_prompt_tokens": 9, "prompt": "<|im_start|>user\nhi", "generated": "Hey"},
        {"id": 1, "is_processing": True, "n_prompt_tokens": 0, "prompt": "<|im_start|>user\nold"},
        {"id": 2, "is_processing": False},
        {"id": 3, "is_processing": False, "prompt": "<|im_start|>user\nno count", "generated": None},
    ]).encode()  # fmt: skip
    signals = slots_signals(slots)
    report = signals.pop("prompts")
    assert signals == {"slots": 4, "running": 1}
    assert isinstance(report, EngineCache) and report.texts == (
        "<|im_start|>user\nhiHey",
        "<|im_start|>user\nno count",
    )


@pytest.mark.parametrize(
    "text", ["vllm:num_requests_running NaN\n", "vllm:num_requests_running -3\n", "vllm:kv_cache_usage_perc NaN\n"]
)
def test_values_no_report_could_carry_are_left_out(text):
    assert metrics_signals(text) == {}


def test_malformed_answers_are_refused():
    with pytest.raises(ValueError):
        metrics_signals('vllm:num_requests_running{engine="0" 3\n')
    with pytest.raises(ValueError):
        slots_signals(b'{"slots": 2}')


def test_a_vllm_engine_is_read_from_metrics_and_slots_is_not_asked_again(engine):
    engine.answers["/metrics"] = (200, VLLM_METRICS.encode())

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            poller = EnginePoller("vllm", engine.url, client, lambda signals: None)
            assert await poller.read() == {"running": 4, "queued": 2, "cache_use": 0.5}
            assert await poller.read() == {"running": 4, "queued": 2, "cache_use": 0.5}
            assert poller.asking == ["/metrics"]

    asyncio.run(main())
    assert engine.asked == {"/slots": 1, "/metrics": 2}


def test_llama_server_without_metrics_answers_501_and_is_read_from_slots(engine):
    engine.answers["/slots"] = (200, b'[{"id":0,"is_processing":true},{"id":1,"is_processing":false}]')
    engine.answers["/metrics"] = (501, b'{"error":{"message":"Start it with `--metrics`"}}')

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            poller = EnginePoller("llama", engine.url, client, lambda signals: None)
            assert await poller.read() == {"slots": 2, "running": 1}
            assert poller.asking == ["/slots"]

    asyncio.run(main())


def test_answers_too_large_are_not_read_again_and_bad_ones_are_tried_again(engine, monkeypatch):
    monkeypatch.setitem(engine_signals.MAX_BYTES, "/metrics", 1024)
    engine.answers["/metrics"] = (200, b"# " + b"x" * 2000 + b"\n")
    engine.answers["/slots"] = (500, b"oops")

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            poller = EnginePoller("big", engine.url, client, lambda signals: None)
            assert await poller.read() == {}
            assert poller.asking == ["/slots"]  # a failure is tried again; an answer over the bound is not
            engine.answers["/slots"] = (200, b"not json")
            assert await poller.read() == {}
            assert poller.asking == ["/slots"]

    asyncio.run(main())


def test_an_engine_slow_to_answer_is_given_up_on_for_that_reading(engine, monkeypatch):
    monkeypatch.setattr(engine_signals, "READ_TIMEOUT", 0.2)
    monkeypatch.setitem(engine_signals.MAX_BYTES, "/slow", 1024)
    engine.delay = 2.0
    engine.answers["/slow"] = (200, b"[]")

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            poller = EnginePoller("slow", engine.url, client, lambda signals: None)
            poller.asking = ["/slow"]
            started = time.monotonic()
            assert await poller.read() == {}
            assert time.monotonic() - started < 1.5  # given up on, well before the engine answers
            assert poller.asking == ["/slow"]

    asyncio.run(main())


def test_an_engine_serving_neither_endpoint_is_not_polled_any_more(engine):
    async def main() -> None:
        async with httpx.AsyncClient() as client:
            stored: list[dict] = []
            poller = EnginePoller("plain", engine.url, client, stored.append, interval=0.01)
            await asyncio.wait_for(poller.run(), 10)
            assert stored == []

    asyncio.run(main())
    assert engine.asked == {"/slots": 1, "/metrics": 1}


def test_a_fronted_engines_entry_gets_its_signals_and_its_poller_stops_when_it_is_removed(engine, registry):
    engine.answers["/health"] = (200, b"{}")
    engine.answers["/v1/models"] = (200, b'{"data": [{"id": "llama"}]}')
    engine.answers["/metrics"] = (200, VLLM_METRICS.encode())

    async def main() -> None:
        engines = Engines(registry)
        try:
            state = await engines.add(EngineSpec.of(engine.url, "vllm-a"))
            deadline = time.monotonic() + 10
            while not registry.get("vllm-a").signals:
                assert time.monotonic() < deadline, "the engine's signals were never read"
                await asyncio.sleep(0.01)
            assert registry.get("vllm-a").signals == {"running": 4, "queued": 2, "cache_use": 0.5}
            await engines.remove("vllm-a")
            assert state.poller is not None
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(state.poller, 10)
            assert state.poller.cancelled()
        finally:
            await engines.close()

    asyncio.run(main())
