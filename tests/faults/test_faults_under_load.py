"""Processes killed and stopped under load: every request the router took is answered, cleanly and in time.

A router and two replicas (unix workers, router links), started as a user
starts them, with short settings so each state is reached within seconds. A
small load driver (8 threads, each request with ``X-Request-Timeout: 2``)
sends echo requests through the router while one process is hit: a worker
or an agent killed (SIGKILL), the router killed and started again on its
port, an agent or a worker stopped (SIGSTOP) and continued. Every request is
classified:

- **ok**: 200 with outputs, named by ``X-Served-By``;
- **failed**: 502, 503 or 504 with a JSON ``{"error", "code"}`` body, within the deadline plus slack;
- **hung**: no answer within the deadline plus slack;
- **lost**: the connection broke without an answer, or the answer was malformed;
- **bad**: an answer of any other status (a 404 or a 500 while a replica is away is a bug);
- **refused**: the connection was refused: only while the router is down;
- **cut**: the router was killed while the request was in it: only the requests that began before it died.

Whatever the fault, nothing may hang, be lost or be answered badly, and
requests after it succeed. The counts are printed (``pytest -s`` shows them).
The cluster lives for the module: before each test, a replica that died is
replaced and both are checked to serve, so every test starts from the same
two-replica state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import Process, Replica, free_port, run_anyserve
from router_http import member_headers

from anyserve.status_client import replica_status

#: Each request's deadline (``X-Request-Timeout``), and how much later than it an answer may come.
DEADLINE = 2.0
SLACK = 3.0
THREADS = 8
#: Each load thread's pause between requests.
PACE = 0.01
ECHO_BODY: dict[str, Any] = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [7]}]}
HEADERS = {"X-Capability-Type": "echo", "X-Request-Timeout": str(DEADLINE)}
#: Replicas expire after 3 s of silence (heartbeats every second); a worker silent 0.5 s is out; a request waits
#: at most 1 s for a worker or for capacity, so a 503 comes before the deadline would make it a 504.
CONFIG = """
[router]
ttl_seconds = 3
capacity_wait_seconds = 1
[replica]
liveness_interval_seconds = 0.2
liveness_timeout_seconds = 0.5
worker_wait_seconds = 1
failed_retry_seconds = 1
"""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


@dataclass
class Cluster:
    """A router on a fixed port and two replicas; replicas that die are replaced under new ids."""

    config: Path
    port: int
    router: Process
    replicas: dict[str, Replica] = field(default_factory=dict)
    #: Every process ever started, killed at the end of the module.
    started: list[Process] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, config: Path) -> Cluster:
        port = free_port()
        cluster = cls(config, port, cls._run_router(config, port))
        cluster.started.append(cluster.router)
        return cluster

    @staticmethod
    def _run_router(config: Path, port: int) -> Process:
        router = run_anyserve("router", "--port", str(port), "--config", str(config))
        router.wait_for(" ready at ")
        return router

    def restart_router(self) -> None:
        """A new router on the same port: the replicas find it by themselves."""
        self.router = self._run_router(self.config, self.port)
        self.started.append(self.router)

    def add_replica(self) -> str:
        replica_id = f"r{next(self._ids)}"
        port = free_port()
        process = run_anyserve(
            "start", "--app", "echo_app:app", "--port", str(port), "--transport", "unix", "--config", str(self.config),
            "--api-server", self.url, "--replica-id", replica_id,
        )  # fmt: skip
        self.started.append(process)
        link = re.search(r"router link (\S+)\)", process.wait_for(" ready at "))
        self.replicas[replica_id] = Replica(process, f"127.0.0.1:{port}", link.group(1) if link else None)
        return replica_id

    def heal(self) -> None:
        """Two live replicas, each registered with the echo offer hot and each having served a request."""
        for replica_id, replica in list(self.replicas.items()):
            if replica.process.proc.poll() is not None:
                replica.process.kill_group()  # its workers, if the agent alone was killed
                del self.replicas[replica_id]
        while len(self.replicas) < 2:
            self.add_replica()
        with httpx.Client(base_url=self.url, timeout=10, headers=member_headers()) as http:
            wait_until(lambda: self._all_hot(http), f"{sorted(self.replicas)} registered with echo hot")
            for replica_id in self.replicas:
                self.wait_served_by(http, replica_id)

    def _all_hot(self, http: httpx.Client) -> bool:
        entries = {e["replica_id"]: e for e in http.get("/registry").json()["replicas"]}
        for replica_id in self.replicas:
            offers = entries.get(replica_id, {}).get("capabilities", [])
            if not any(o.get("type") == "echo" and o.get("state", "hot") == "hot" for o in offers):
                return False
        return True

    def wait_served_by(self, http: httpx.Client, replica_id: str, timeout: float = 20.0) -> None:
        """Requests one after another until ``replica_id`` answers one (equally loaded replicas take turns)."""
        seen: list[str] = []

        def served() -> bool:
            answer = http.post("/infer", json=ECHO_BODY, headers=HEADERS)
            seen.append(f"{answer.status_code} {answer.headers.get('X-Served-By')}")
            return answer.status_code == 200 and answer.headers.get("X-Served-By") == replica_id

        try:
            wait_until(served, f"{replica_id} to serve", timeout)
        except AssertionError:
            raise AssertionError(f"{replica_id} served none of: {seen[-10:]}") from None

    def worker_pid(self, replica_id: str) -> int:
        workers = replica_status(self.replicas[replica_id].endpoint)["workers"]
        (pid,) = [w["pid"] for w in workers if w["worker_class"] is None and w["alive"]]
        return int(pid)


@pytest.fixture(scope="module")
def started_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    config = tmp_path_factory.mktemp("faults") / "anyserve.toml"
    config.write_text(CONFIG)
    cluster: Cluster | None = None
    try:
        cluster = Cluster.start(config)
        yield cluster
    finally:
        if cluster is not None:
            for process in cluster.started:
                process.kill_group()


@pytest.fixture
def cluster(started_cluster: Cluster) -> Cluster:
    """The module's cluster, healed: whatever the previous test did, two replicas serve."""
    started_cluster.heal()
    return started_cluster


# -- the load driver --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    began: float
    took: float
    kind: str
    status: int | None = None
    served_by: str | None = None
    detail: str = ""


def send_one(http: httpx.Client) -> Outcome:
    """One echo request, classified (see the module's docstring)."""
    began = time.monotonic()
    try:
        answer = http.post("/infer", json=ECHO_BODY, headers=HEADERS)
    except httpx.TimeoutException as exc:
        return Outcome(began, time.monotonic() - began, "hung", detail=repr(exc))
    except httpx.ConnectError as exc:
        return Outcome(began, time.monotonic() - began, "refused", detail=repr(exc))
    except httpx.TransportError as exc:
        return Outcome(began, time.monotonic() - began, "lost", detail=repr(exc))
    took = time.monotonic() - began
    status, served_by = answer.status_code, answer.headers.get("X-Served-By")
    try:
        body = answer.json()
    except ValueError:
        return Outcome(began, took, "lost", status, served_by, f"not JSON: {answer.content[:200]!r}")
    if status == 200:
        good = isinstance(body, dict) and any(o.get("name") == "output_x" for o in body.get("outputs", []))
        return Outcome(began, took, "ok" if good and served_by else "lost", status, served_by, str(body)[:200])
    clean = isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("code"), str)
    if status in (502, 503, 504) and clean and took <= DEADLINE + SLACK:
        return Outcome(began, took, "failed", status, served_by, f"{body['code']}: {body['error'][:160]}")
    return Outcome(began, took, "bad", status, served_by, str(body)[:200])


class Load:
    """``THREADS`` threads sending one request after another through the router until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]
        self.began = 0.0

    def _run(self) -> None:
        timeout = httpx.Timeout(DEADLINE + SLACK, connect=DEADLINE + SLACK)
        with httpx.Client(base_url=self.url, timeout=timeout, headers=member_headers()) as http:
            while not self._stop.is_set():
                outcome = send_one(http)
                with self._lock:
                    self.outcomes.append(outcome)
                # Paced a little: the point is many requests in flight when the fault hits, not a benchmark
                # (the machine is shared); and a refused connection fails at once, which must not spin.
                time.sleep(PACE if outcome.kind == "ok" else 0.02)

    def __enter__(self) -> Load:
        self.began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE + SLACK + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread is stuck past every timeout"

    def run_for(self, seconds: float) -> None:
        """Let the threads send for ``seconds`` more while the test waits (before, during, after a fault)."""
        time.sleep(seconds)

    def counts(self, since: float = 0.0) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes if o.began >= since)

    def report(self, title: str, marks: dict[str, float]) -> None:
        """The counts, and per interval from the load's start and from each mark (``pytest -s`` shows them)."""
        begun = self.began
        print(f"\n{title}: {len(self.outcomes)} requests, {dict(self.counts())}")
        edges = sorted({"start": begun, **marks}.items(), key=lambda kv: kv[1])
        for (name, start), end in zip(edges, [e[1] for e in edges[1:]] + [float("inf")], strict=True):
            window = Counter(o.kind for o in self.outcomes if start <= o.began < end)
            served = Counter(o.served_by for o in self.outcomes if start <= o.began < end and o.kind == "ok")
            statuses = Counter(o.status for o in self.outcomes if start <= o.began < end and o.kind == "failed")
            print(
                f"  from {name} (+{start - begun:.2f}s): {dict(window)}; ok by {dict(served)}; "
                f"failed by status {dict(statuses)}"
            )
        for outcome in self.outcomes:
            if outcome.kind in ("hung", "lost", "bad"):
                print(f"  {outcome.kind} at +{outcome.began - begun:.2f}s after {outcome.took:.2f}s: {outcome}")

    def assert_clean(self, *, allowed: tuple[str, ...] = ()) -> None:
        """Nothing hung, lost or badly answered; each failure a 502/503/504 within the deadline plus slack."""
        counts = self.counts()
        troubles = [o for o in self.outcomes if o.kind not in ("ok", "failed", *allowed)]
        assert counts["hung"] == 0 and counts["lost"] == 0 and counts["bad"] == 0, f"{dict(counts)}; {troubles[:5]}"
        assert not troubles, f"{dict(counts)}; first: {troubles[:5]}"
        assert all(o.took <= DEADLINE + SLACK for o in self.outcomes if o.kind in ("ok", "failed"))


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP, and SIGCONT on the way out whatever happens in between."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# -- the faults -------------------------------------------------------------------------------------------------


def test_a_worker_killed_under_load(cluster: Cluster) -> None:
    victim = sorted(cluster.replicas)[0]
    worker = cluster.worker_pid(victim)
    with Load(cluster.url) as load:
        load.run_for(0.5)
        killed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        load.run_for(3.0)
    load.report(f"SIGKILL worker {worker} of {victim}", {"kill": killed_at})
    load.assert_clean()
    after = [o for o in load.outcomes if o.began >= killed_at and o.kind == "ok"]
    assert after, "nothing succeeded after the kill"
    with httpx.Client(base_url=cluster.url, timeout=10, headers=member_headers()) as http:
        cluster.wait_served_by(http, victim)  # by its restarted worker
    assert cluster.worker_pid(victim) != worker


def test_an_agent_killed_under_load(cluster: Cluster) -> None:
    victim, other = sorted(cluster.replicas)
    agent = cluster.replicas[victim].process
    with Load(cluster.url) as load:
        load.run_for(0.5)
        killed_at = time.monotonic()
        agent.signal(signal.SIGKILL)
        agent.proc.wait(timeout=10)
        load.run_for(3.0)
    load.report(f"SIGKILL agent {agent.proc.pid} ({victim})", {"kill": killed_at})
    load.assert_clean()
    after = [o for o in load.outcomes if o.began >= killed_at + DEADLINE and o.kind == "ok"]
    assert after and {o.served_by for o in after} == {other}, "the other replica did not take the traffic"


def test_the_router_killed_under_load_and_started_again(cluster: Cluster) -> None:
    """Refused while it is down; cut if in it when it died; after the restart, served within seconds."""
    old = cluster.router
    with Load(cluster.url) as load:
        load.run_for(0.5)
        killed_at = time.monotonic()
        old.kill_group()  # SIGKILL, and waited for: from here on nothing listens on the port
        dead_at = time.monotonic()
        load.run_for(0.5)
        cluster.restart_router()
        ready_at = time.monotonic()
        load.run_for(3.0)
    marks = {"kill": killed_at, "restart ready": ready_at}
    for outcome in load.outcomes:
        if outcome.kind == "lost" and outcome.began < dead_at:
            outcome.kind = "cut"
    load.report("SIGKILL router, then a new one on its port", marks)
    load.assert_clean(allowed=("refused", "cut"))
    refused = [o for o in load.outcomes if o.kind == "refused"]
    assert refused and all(killed_at <= o.began < ready_at for o in refused), "refused while a router listened"
    served = sorted(o.began + o.took for o in load.outcomes if o.began >= ready_at and o.kind == "ok")
    assert served, "nothing was served after the restart"
    print(f"  first answer after the restart {served[0] - ready_at:.2f}s after the new router was ready")
    assert served[0] - ready_at < 5.0
    assert load.counts(since=ready_at)["ok"] > load.counts(since=ready_at)["failed"]


@pytest.mark.parametrize("target", ["agent", "worker"])
def test_a_process_stopped_under_load(cluster: Cluster, target: str) -> None:
    """A stopped (wedged, paused) agent or worker: its requests end at their deadline, the other replica serves.

    Held past the deadline, so requests stuck in it are answered 504 by the router, and past the liveness
    timeout (a worker) or long enough for the router to prefer the other replica (an agent); then continued.
    """
    victim, other = sorted(cluster.replicas)
    pid = cluster.replicas[victim].pid if target == "agent" else cluster.worker_pid(victim)
    with Load(cluster.url) as load:
        load.run_for(0.5)
        stopped_at = time.monotonic()
        with stopped(pid):
            load.run_for(DEADLINE + 1.0)
        continued_at = time.monotonic()
        load.run_for(2.0)
    load.report(f"SIGSTOP {target} {pid} of {victim}", {"stop": stopped_at, "continue": continued_at})
    load.assert_clean()
    during = {
        o.served_by
        for o in load.outcomes
        if stopped_at < o.began and o.began + o.took < continued_at and o.kind == "ok"
    }
    assert during == {other}, f"the other replica did not take the traffic while the {target} was stopped"
    assert load.counts(since=continued_at)["ok"], "nothing succeeded after SIGCONT"
    with httpx.Client(base_url=cluster.url, timeout=10, headers=member_headers()) as http:
        cluster.wait_served_by(http, victim)
    if target == "worker":
        assert cluster.worker_pid(victim) == pid  # continued, not replaced
