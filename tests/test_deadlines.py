"""Deadlines, cancellation and liveness end to end: a stopped process costs a request its deadline, never a hang.

Real processes, as users run them: a router and a replica of
``tests/apps/deadline_app.py`` over the unix transport and the router link,
with short liveness and wait settings so each state is reached quickly. An
agent or a worker is stopped with SIGSTOP, as a wedged or paused process
would be, and continued afterwards: the replica must serve again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import Process, free_port, run_anyserve
from router_http import member_headers

from anyserve.catalog import Catalog
from anyserve.config import Selection
from anyserve.plugins import get_plugin_manager
from anyserve_router.link_upstream import CONNECT_TIMEOUT, LinkUpstream
from anyserve_router.upstream import GrpcUpstream, UpstreamError

#: Past its deadline a request is answered within this (the router checks deadlines every 50 ms; a loaded
#: machine is slower): generous, since the point is "at the deadline, not at the client's own timeout".
SLACK = 2.0
DEADLINE = 1.0
ECHO = {"X-Capability-Type": "echo"}
BODY: dict[str, Any] = {"inputs": []}


def write_config(path: Path, *, router: dict[str, float], replica: dict[str, float]) -> Path:
    lines = ["[router]", *(f"{k} = {v}" for k, v in router.items()), "[replica]"]
    lines += [f"{k} = {v}" for k, v in replica.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Cluster:
    router: Process
    replica: Process
    http: httpx.Client

    def replica_entry(self) -> dict[str, Any] | None:
        replicas = self.http.get("/registry").json()["replicas"]
        return replicas[0] if replicas else None

    def offer_state(self, capability_type: str) -> str | None:
        entry = self.replica_entry()
        if entry is None:
            return None
        found = [c for c in entry["capabilities"] if c.get("type") == capability_type]
        return found[0].get("state", "hot") if found else None

    def worker_pid(self) -> int:
        answer = self.http.post("/infer", json=BODY, headers=ECHO)
        assert answer.status_code == 200, answer.text
        return int(next(o for o in answer.json()["outputs"] if o["name"] == "pid")["data"][0])


@contextlib.contextmanager
def start_cluster(config: Path, *, port: int | None = None) -> Iterator[Cluster]:
    """A router and a replica of the test app registered with it, both killed on the way out."""
    started: list[Process] = []
    http: httpx.Client | None = None
    try:
        port = port or free_port()
        router = run_anyserve("router", "--port", str(port), env={"ANYSERVE_CONFIG": str(config)})
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica = run_anyserve(
            "start", "--app", "deadline_app:app", "--port", str(free_port()), "--transport", "unix",
            "--api-server", url, "--replica-id", "r1", env={"ANYSERVE_CONFIG": str(config)},
        )  # fmt: skip
        started.append(replica)
        replica.wait_for(" ready at ")
        http = httpx.Client(base_url=url, timeout=30, headers=member_headers())
        cluster = Cluster(router, replica, http)
        wait_until(lambda: cluster.replica_entry() is not None, "the replica to register")
        yield cluster
    finally:
        if http is not None:
            http.close()
        for process in started:
            process.kill_group()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Probes every 0.2 s, a worker silent 0.5 s is out; requests wait up to 3 s for a worker, 0.3 s for capacity."""
    config = write_config(
        tmp_path_factory.mktemp("deadlines") / "anyserve.toml",
        router={"capacity_wait_seconds": 0.3},
        replica={
            "liveness_interval_seconds": 0.2,
            "liveness_timeout_seconds": 0.5,
            "worker_wait_seconds": 3.0,
            "failed_retry_seconds": 1.0,
        },
    )
    with start_cluster(config) as started:
        yield started


def timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = send()
    return response, time.monotonic() - began


def all_at_their_deadline(http: httpx.Client, count: int = 4) -> list[tuple[httpx.Response, float]]:
    """``count`` echo requests with a 1 s deadline, sent together."""
    headers = {**ECHO, "X-Request-Timeout": str(DEADLINE)}
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        sent = [pool.submit(timed, lambda: http.post("/infer", json=BODY, headers=headers)) for _ in range(count)]
        return [future.result(timeout=30) for future in sent]


def assert_504_at_the_deadline(answers: list[tuple[httpx.Response, float]]) -> None:
    for response, took in answers:
        assert response.status_code == 504, response.text
        assert response.json()["code"] == "DEADLINE_EXCEEDED"
        assert "deadline" in response.json()["error"] and response.headers["X-Request-Id"] in response.json()["error"]
        assert DEADLINE * 0.9 <= took < DEADLINE + SLACK, f"answered after {took:.2f}s"


def test_the_deadline_reaches_the_handler(cluster):
    """The client's deadline, else the router's default (300 s), less what the way took."""
    headers = {**ECHO, "X-Request-Timeout": "7"}
    left = cluster.http.post("/infer", json=BODY, headers=headers).json()["outputs"]
    assert 5.0 < next(o for o in left if o["name"] == "left")["data"][0] <= 7.0
    left = cluster.http.post("/infer", json=BODY, headers=ECHO).json()["outputs"]
    assert 290.0 < next(o for o in left if o["name"] == "left")["data"][0] <= 300.0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v2/models/slow/infer", {}),  # a plain function: context.cancelled turns true
        ("/infer", {"X-Capability-Type": "slow-async"}),  # async def: CancelledError
    ],
)
def test_a_unary_client_that_disconnects_cancels_the_handler(cluster, tmp_path, path, headers):
    marker = tmp_path / "stopped"
    body = {"inputs": [], "parameters": {"marker": str(marker)}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(str(cluster.http.base_url).rstrip("/") + path, json=body, headers=headers, timeout=0.5)
    wait_until(lambda: marker.exists(), "the handler to be cancelled", timeout=10)
    assert marker.read_text() == "cancelled"


def test_a_stopped_worker_fails_its_requests_at_the_deadline_is_taken_out_and_serves_again(cluster):
    worker = cluster.worker_pid()
    os.kill(worker, signal.SIGSTOP)
    try:
        assert_504_at_the_deadline(all_at_their_deadline(cluster.http))
        # Its probes go unanswered: the replica reports it and tells the router its capability failed.
        wait_until(lambda: cluster.offer_state("echo") == "failed", "the router to learn the worker is out")
        workers = cluster.replica_entry()["status"]["workers"]  # type: ignore[index]
        assert [w["responsive"] for w in workers if w["worker_class"] is None] == [False]
        busy = cluster.http.post("/infer", json=BODY, headers=ECHO)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1", busy.text
        assert "failed" in busy.json()["error"]
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_until(lambda: cluster.offer_state("echo") == "hot", "the router to learn the worker answers again")
    assert cluster.worker_pid() == worker  # the same process, not a restarted one


def test_a_worker_killed_by_requests_is_back_at_once_and_no_request_is_a_404(cluster):
    """Each crash is one request's 503; the requests after it wait for the restart, which is not backed off."""
    for _ in range(3):
        crashed = cluster.http.post("/infer", json=BODY, headers={"X-Capability-Type": "crash"})
        assert crashed.status_code == 503 and crashed.headers["Retry-After"] == "1", crashed.text
        assert cluster.http.post("/infer", json=BODY, headers=ECHO).status_code == 200
    restarts = [line for line in cluster.replica.output().splitlines() if "exited (code 3); restarting in" in line]
    assert len(restarts) == 3 and all(line.endswith("restarting in 0.2s") for line in restarts), restarts


def test_a_failed_worker_class_is_503_and_cold_again_after_its_retry(cluster):
    for _ in range(3):
        failed = cluster.http.post("/infer", json=BODY, headers={"X-Capability-Type": "broken"})
        assert failed.status_code == 503 and "weights not found on purpose" in failed.text
    wait_until(lambda: cluster.offer_state("broken") == "failed", "the router to learn the class failed")
    refused = cluster.http.post("/infer", json=BODY, headers={"X-Capability-Type": "broken"})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
    wait_until(lambda: cluster.offer_state("broken") == "cold", "the router to learn the class is cold again", 5)


def test_a_stopped_agent_fails_requests_at_their_deadline_is_remembered_and_serves_again(tmp_path):
    config = write_config(
        tmp_path / "anyserve.toml", router={"ttl_seconds": 1.5, "capacity_wait_seconds": 0.3}, replica={}
    )
    with start_cluster(config) as cluster:
        cluster.worker_pid()  # the link is open
        agent = cluster.replica.proc.pid
        os.kill(agent, signal.SIGSTOP)
        try:
            openai = concurrent.futures.ThreadPoolExecutor(1).submit(
                timed,
                lambda: cluster.http.post(
                    "/v1/chat/completions",
                    json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"X-Request-Timeout": str(DEADLINE)},
                ),
            )
            assert_504_at_the_deadline(all_at_their_deadline(cluster.http))
            answer, took = openai.result(timeout=30)
            assert answer.status_code == 504 and answer.json()["error"]["code"] == "deadline_exceeded", answer.text
            assert took < DEADLINE + SLACK
            # Silent past its ttl, it expires; what it offered is remembered: "not now", not "nobody".
            wait_until(lambda: cluster.replica_entry() is None, "the replica to expire")
            gone = cluster.http.post("/infer", json=BODY, headers=ECHO)
            assert gone.status_code == 503 and gone.headers["Retry-After"] == "1", gone.text
            assert cluster.http.post("/infer", json=BODY, headers={"X-Capability-Type": "nobody"}).status_code == 404
        finally:
            os.kill(agent, signal.SIGCONT)
        wait_until(lambda: cluster.http.post("/infer", json=BODY, headers=ECHO).status_code == 200, "serving again")


def test_a_restarted_router_serves_at_once_as_replicas_register_again(tmp_path):
    """Requests sent as the new router starts wait for the replica's re-registration, then are served."""
    config = write_config(tmp_path / "anyserve.toml", router={}, replica={})
    port = free_port()
    with start_cluster(config, port=port) as cluster:
        assert cluster.worker_pid()
        cluster.router.kill_group()
        router = run_anyserve("router", "--port", str(port), env={"ANYSERVE_CONFIG": str(config)})
        try:
            router.wait_for(" ready at ")
            cluster.http.close()  # its connections were to the router that is gone
            cluster.http = httpx.Client(base_url=cluster.http.base_url, timeout=30, headers=member_headers())
            began = time.monotonic()
            first = cluster.http.post("/infer", json=BODY, headers=ECHO)
            assert first.status_code == 200, first.text
            print(f"served {time.monotonic() - began:.3f}s after the new router was ready")
            wait_until(lambda: cluster.replica_entry() is not None, "the replica in the registry", 2.0)
        finally:
            router.kill_group()


def test_a_refused_link_is_final_at_once():
    """Nothing listening where a replica's link was: unreachable (another replica may be tried) without retrying."""

    async def dial() -> tuple[UpstreamError, float]:
        upstream = LinkUpstream(Catalog(get_plugin_manager()), Selection(name="tcp"), GrpcUpstream())
        link = f"tcp://127.0.0.1:{free_port()}"
        transport = upstream._transport(link)
        assert transport is not None
        began = time.monotonic()
        with pytest.raises(UpstreamError) as refused:
            await upstream.connection(link, transport)
        took = time.monotonic() - began
        await upstream.close()
        return refused.value, took

    error, took = asyncio.run(dial())
    assert error.unreachable and error.code == "UNAVAILABLE"
    assert took < CONNECT_TIMEOUT / 2, f"a refused dial took {took:.2f}s: it was retried"
