"""Fixtures that start real routers and replicas as subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator

import httpx
import pytest
from kserve import Wire
from processes import Process, Replica, Router, run_anyserve
from router_http import member_headers


@pytest.fixture(scope="session", autouse=True)
def children_tmpdir() -> Iterator[str]:
    """One temporary folder for every process the tests start, removed at the end.

    A replica stopped with SIGKILL (every test's clean-up) cannot remove its
    run folder; under ``TMPDIR`` here, none outlives the session.
    """
    path = tempfile.mkdtemp(prefix="anyserve-tests-")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = path
    yield path
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    shutil.rmtree(path, ignore_errors=True)


TRANSPORTS = ["inproc", "unix"]


@pytest.fixture
def start_replica() -> Iterator[Callable[..., Replica]]:
    """``start_replica(app, *args, transport=..., workers=...)`` -> a ready replica."""
    started: list[Process] = []

    def start(
        app: str | None = "echo_app:app", *args: str, transport: str = "unix", workers: int = 1, **env: str
    ) -> Replica:
        # Port 0: the replica binds a free port and prints it (a port picked in advance can be taken meanwhile).
        cli = ["start", "--port", "0", "--transport", transport, "--workers", str(workers), *args]
        if app is not None:
            cli += ["--app", app]
        process = run_anyserve(*cli, env=env or None)
        started.append(process)
        ready = process.wait_for(" ready at ")
        endpoint = ready.split(" ready at ", 1)[1].split()[0]
        link = re.search(r"router link (\S+)\)", ready)
        return Replica(process, endpoint, link.group(1) if link else None)

    yield start
    for process in started:
        process.kill_group()


@pytest.fixture
def start_router() -> Iterator[Callable[..., Router]]:
    """``start_router(*args)`` -> a ready ``anyserve router`` on a free port."""
    started: list[Process] = []

    def start(*args: str, port: int | None = None, **env: str) -> Router:
        # Port 0 unless the test needs a given one: the router binds a free port and prints it, so no other
        # process can take a port picked in advance before the router listens on it.
        process = run_anyserve("router", "--port", str(port or 0), *args, env=env or None)
        started.append(process)
        ready = process.wait_for(" ready at ")
        bound = ready.split(" ready at ", 1)[1].split()[0].rstrip(",;").rsplit(":", 1)[1]
        return Router(process, f"http://127.0.0.1:{bound}")

    yield start
    for process in started:
        process.kill_group()


@pytest.fixture
def http_to() -> Iterator[Callable[[str], httpx.Client]]:
    """``http_to(url)`` -> a pooled HTTP client to a router, as a cluster member, closed after the test."""
    clients: list[httpx.Client] = []

    def make(url: str) -> httpx.Client:
        clients.append(httpx.Client(base_url=url, timeout=30, headers=member_headers()))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def wire_for() -> Iterator[Callable[[str], Wire]]:
    """``wire_for(endpoint)`` -> a bare KServe v2 gRPC client of a replica, closed after the test."""
    wires: list[Wire] = []

    def make(endpoint: str) -> Wire:
        wires.append(Wire(endpoint))
        return wires[-1]

    yield make
    for wire in wires:
        wire.close()


@pytest.fixture(params=["grpc", "link"])
def data_path(request: pytest.FixtureRequest) -> str:
    """How the router reaches replicas registered with ``register(..., link=...)``: gRPC, or their link."""
    return request.param


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Every end-to-end replica test runs over each transport: swapping is configuration only."""
    return request.param
