"""Load signals end to end: a real router and replica, over HTTP and gRPC.

The replica's heartbeats carry its load report, and every gRPC answer its
current load (``x-anyserve-load`` trailing metadata), which the router
keeps on the replica's registry entry. ``GET /registry`` shows both.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from processes import Router
from router_http import tensor


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


def test_each_answer_over_grpc_carries_the_replicas_load_to_its_entry(
    start_router: Callable[..., Router], start_replica, http_to, tmp_path: Path
):
    # Heartbeats every 60 s: whatever the entry shows within this test came with the answers. gRPC only.
    router = start_router("--ttl-seconds", "300", ANYSERVE_CONFIG=config(tmp_path, 60), ANYSERVE_LINK="off")
    http = http_to(router.url)
    start_replica("echo_app:app", "--api-server", router.url, "--replica-id", "r1", transport="inproc")
    registered(http, "r1")
    assert "signals" not in entry(http, "r1")  # registered, not heartbeated yet
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
