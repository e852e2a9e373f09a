"""Worker classes started on demand, stopped when idle, kept within a resource budget.

Everything runs as a user runs it: `anyserve start` with real worker
processes over the unix transport; lifecycle events are read from the file
the test app appends to (see tests/apps/dynamic_app.py).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from processes import ROOT

from anyserve import Client, InferenceError
from anyserve.status_client import replica_status


def status(endpoint: str) -> dict:
    return replica_status(endpoint)


def states(endpoint: str) -> dict[str, str]:
    return {c["worker"]: c["state"] for c in status(endpoint)["worker_classes"]}


def events(path: Path) -> list[str]:
    return [" ".join(line.split()[:2]) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def dynamic(start_replica, tmp_path):
    """start(*cli_args, idle=..., start_delay=...) -> (client, endpoint, events file)."""
    clients: list[Client] = []

    def start(*args: str, idle: float = 1000, start_delay: float = 0.5):
        log = tmp_path / "events.log"
        replica = start_replica(
            "dynamic_app:app", *args, transport="unix",
            ANYSERVE_TEST_EVENTS=str(log), ANYSERVE_TEST_START_DELAY=str(start_delay), ANYSERVE_TEST_IDLE=str(idle),
        )  # fmt: skip
        clients.append(Client(replica.endpoint, timeout=30))
        return clients[-1], replica.endpoint, log

    yield start
    for client in clients:
        client.close()


def chat(client: Client, model: str, seconds: float = 0.0, timeout: float = 30.0):
    return client.infer("chat", {"seconds": seconds}, capability={"type": "chat", "model": model}, timeout=timeout)


def test_cold_capabilities_are_advertised_and_started_on_demand(dynamic):
    client, endpoint, log = dynamic()
    assert states(endpoint) == {"Small": "cold", "Medium": "cold", "Large": "cold", "Broken": "cold"}
    assert client.infer("echo")["served_by"] == ["plain"]  # plain handlers are always on
    assert events(log) == []
    assert chat(client, "small")["served_by"] == ["Small"]
    assert states(endpoint)["Small"] == "hot"
    assert events(log) == ["start Small"]
    assert list(client.stream_text("chat", capability={"type": "chat", "model": "small"})) == ["loaded", " ", "Small"]
    switches = status(endpoint)["switches"]
    assert [(s["worker"], s["action"]) for s in switches] == [("Small", "start")]
    assert switches[0]["seconds"] >= 0.5  # on_start's cost is what the switch cost


def test_concurrent_requests_for_a_cold_worker_cause_one_start(dynamic):
    client, _, log = dynamic(start_delay=1.5)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: chat(client, "small")["served_by"], range(8)))
    assert answers == [["Small"]] * 8
    assert events(log) == ["start Small"]


def test_idle_worker_is_stopped_and_cleaned_up(dynamic):
    client, endpoint, log = dynamic(idle=1.0)
    chat(client, "small")
    wait_until(lambda: states(endpoint)["Small"] == "cold", what="the idle stop")
    assert events(log) == ["start Small", "cleanup Small"]
    assert chat(client, "small")["served_by"] == ["Small"]  # and it starts again on demand
    assert events(log) == ["start Small", "cleanup Small", "start Small"]


def test_least_recently_used_idle_worker_makes_room(dynamic):
    client, endpoint, log = dynamic("--resources", "gpus=2")
    chat(client, "small")
    chat(client, "medium")
    chat(client, "small")  # medium is now the least recently used
    assert events(log) == ["start Small", "start Medium"]
    assert chat(client, "large")["served_by"] == ["Large"]  # needs both gpus: both go, LRU first
    assert events(log) == ["start Small", "start Medium", "cleanup Medium", "cleanup Small", "start Large"]
    assert states(endpoint) == {"Small": "cold", "Medium": "cold", "Large": "hot", "Broken": "cold"}
    assert status(endpoint)["resources"] == {"budget": {"gpus": 2.0}, "in_use": {"gpus": 2.0}}


def test_a_request_waits_for_a_busy_worker_then_is_served(dynamic):
    client, _, log = dynamic("--resources", "gpus=1")
    chat(client, "small")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        busy = pool.submit(chat, client, "small", 1.5)
        time.sleep(0.3)
        waiting = pool.submit(chat, client, "medium", 0.0, 20.0)
        assert busy.result(timeout=30)["served_by"] == ["Small"]
        assert waiting.result(timeout=30)["served_by"] == ["Medium"]
    assert events(log) == ["start Small", "cleanup Small", "start Medium"]


def test_deadline_expires_with_resource_exhausted_when_nothing_frees(dynamic):
    client, _, _ = dynamic("--resources", "gpus=1")
    chat(client, "small")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(chat, client, "small", 3.0)
        time.sleep(0.3)
        with pytest.raises(InferenceError) as info:
            chat(client, "medium", timeout=1.0)
        assert busy.result(timeout=30)["served_by"] == ["Small"]
    assert info.value.code in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
    if info.value.code == "RESOURCE_EXHAUSTED":
        assert "gpus" in info.value.message


def test_a_worker_that_cannot_fit_at_all_is_refused_at_once(dynamic):
    client, _, _ = dynamic("--resources", "gpus=1")
    with pytest.raises(InferenceError) as info:
        chat(client, "large")
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert "needs gpus=2" in info.value.message and "budget is gpus=1" in info.value.message


def test_crash_loop_marks_the_worker_unavailable_with_its_error(dynamic):
    client, endpoint, _ = dynamic()
    for _ in range(3):
        with pytest.raises(InferenceError) as info:
            client.infer("broken", capability={"type": "broken"})
        assert info.value.code == "UNAVAILABLE"
        assert "weights not found on purpose" in info.value.message
    with pytest.raises(InferenceError) as info:
        client.infer("broken", capability={"type": "broken"})
    assert "unavailable after 3" in info.value.message and "retrying in" in info.value.message
    broken = next(c for c in status(endpoint)["worker_classes"] if c["worker"] == "Broken")
    assert broken["state"] == "failed"
    assert "weights not found on purpose" in broken["last_error"]
    assert chat(client, "small")["served_by"] == ["Small"]  # the rest keeps working


def test_a_crashed_worker_is_restarted(dynamic):
    client, endpoint, log = dynamic()
    first = chat(client, "small")["pid"][0]
    with pytest.raises(InferenceError) as info:
        client.infer("chat", capability={"type": "chat", "model": "small"}, parameters={"crash": True})
    assert info.value.code == "UNAVAILABLE"
    wait_until(lambda: events(log).count("start Small") == 2, what="the restart")
    assert chat(client, "small")["pid"][0] != first
    assert states(endpoint)["Small"] == "hot"


def test_anyserve_status_shows_workers_and_switches(dynamic):
    client, endpoint, _ = dynamic()
    chat(client, "small")
    out = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "status", endpoint], capture_output=True, text=True, timeout=30,
        cwd=ROOT, env={"COLUMNS": "200", "PATH": "", "ANYSERVE_STATE_DIR": os.environ["ANYSERVE_STATE_DIR"]},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for expected in ("worker classes", "Small", "hot", "cold", "recent switches", "start"):
        assert expected in out.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "status", endpoint, "--json"], capture_output=True, text=True,
        timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert json.loads(as_json.stdout)["worker_classes"][0]["worker"] == "Small"


def test_router_sees_states_and_prefers_the_hot_replica(start_router, start_replica, tmp_path):
    router = start_router()
    env = {"ANYSERVE_TEST_EVENTS": str(tmp_path / "events.log"), "ANYSERVE_TEST_START_DELAY": "0.2"}
    warm = start_replica("dynamic_app:app", "--api-server", router.url, "--replica-id", "warm", **env)
    start_replica("dynamic_app:app", "--api-server", router.url, "--replica-id", "cold", **env)

    def offer_state(replica_id: str) -> str | None:
        replicas = {r["replica_id"]: r for r in httpx.get(f"{router.url}/registry", timeout=5).json()["replicas"]}
        if replica_id not in replicas:
            return None
        small = [c for c in replicas[replica_id]["capabilities"] if c.get("model") == "small" and not c.get("stream")]
        return small[0].get("state", "hot")

    wait_until(lambda: offer_state("warm") == "cold" and offer_state("cold") == "cold", what="both registrations")
    with Client(warm.endpoint) as client:
        chat(client, "small")
    wait_until(lambda: offer_state("warm") == "hot", what="the router to learn the worker is hot")
    headers = {"X-Capability-Type": "chat", "X-Capability-Model": "small"}
    body = {"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [0.0]}]}
    served = {httpx.post(f"{router.url}/infer", json=body, headers=headers, timeout=30).headers["X-Served-By"]
              for _ in range(10)}  # fmt: skip
    assert served == {"warm"}
    assert offer_state("cold") == "cold"
    registry = httpx.get(f"{router.url}/registry", timeout=5).json()["replicas"]
    status_of_warm = next(r for r in registry if r["replica_id"] == "warm")["status"]
    assert {c["worker"]: c["state"] for c in status_of_warm["worker_classes"]}["Small"] == "hot"
    out = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "status", router.url], capture_output=True, text=True, timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "warm" in out.stdout and "cold" in out.stdout and "Small" in out.stdout
