"""A replica agent's ``/metrics``, end to end: its own port, who may read it, its workers' figures, hostile callers.

A real replica of tests/apps/metrics_app.py, its workers in processes of
their own (the unix transport), so the handler's own counter crosses a
process boundary through the multiprocess directory the agent gives them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from kserve import request
from metrics_text import families, value
from router_http import admin_headers, member_headers

from anyserve.metric_names import REPLICA
from anyserve.replica.metrics_http import MAX_HEAD
from anyserve_objects_fs import open_store


@pytest.fixture
def replica(start_replica):
    started = start_replica("metrics_app:app", transport="unix")
    ready = started.process.wait_for(" ready at ")
    found = re.search(r"metrics (http://\S+/metrics)", ready)
    assert found, ready
    return started, found.group(1)


def scrape(url: str) -> str:
    answer = httpx.get(url, headers=member_headers(), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_the_ready_line_names_the_endpoint_and_it_needs_a_token(replica):
    _, url = replica
    none = httpx.get(url, timeout=30)
    assert none.status_code == 401 and none.headers["connection"] == "close"
    assert httpx.get(url, headers={"Authorization": "Bearer made-up"}, timeout=30).status_code == 401
    assert httpx.get(url, headers=admin_headers(), timeout=30).status_code == 200
    declared = families(scrape(url))
    for spec in REPLICA:
        if not spec.name.startswith("anyserve_objects"):  # no object store configured: its size is not known
            assert spec.name in declared, spec.name


def test_requests_and_a_handlers_own_counter_are_counted(replica, wire_for):
    started, url = replica
    wire = wire_for(started.endpoint)
    for _ in range(3):
        wire.infer(request(x=[1]), {"type": "counted"})
    text = scrape(url)
    assert value(text, "anyserve_replica_requests_total", capability="type=counted", code="OK") == 3
    assert value(text, "anyserve_replica_request_duration_seconds_count", capability="type=counted") == 3
    assert value(text, "anyserve_test_handled_total") == 3  # counted in the worker, shown by the agent
    assert value(text, "anyserve_replica_requests_in_flight") == 0
    assert value(text, "anyserve_replica_requests_queued") == 0
    with pytest.raises(grpc.RpcError):
        wire.infer(request(x=[1]), {"type": "no-such"})
    assert value(scrape(url), "anyserve_replica_requests_total", code="NOT_FOUND") == 1


def test_worker_class_state_follows_its_start(replica, wire_for):
    started, url = replica
    text = scrape(url)
    assert value(text, "anyserve_worker_state", worker_class="Warm", state="cold") == 1
    assert value(text, "anyserve_worker_state", worker_class="Warm", state="hot") == 0
    wire_for(started.endpoint).infer(request(x=[1]), {"type": "warm"})
    text = scrape(url)
    assert value(text, "anyserve_worker_state", worker_class="Warm", state="hot") == 1
    assert value(text, "anyserve_worker_state", worker_class="Warm", state="cold") == 0
    assert value(text, "anyserve_worker_switches_total", worker_class="Warm") == 1
    assert value(text, "anyserve_worker_switch_seconds_count", worker_class="Warm") == 1
    assert value(text, "anyserve_replica_requests_total", capability="type=warm", code="OK") == 1


def _raw(url: str, data: bytes, timeout: float = 30) -> bytes:
    """What the endpoint answers to ``data`` sent as it is, read until it closes the connection."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # a refusal may close before all of it is sent
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_callers_get_short_answers_and_a_closed_connection(replica):
    _, url = replica
    path = urlsplit(url).path
    assert _raw(url, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode()).startswith(
        b"HTTP/1.1 405"
    )
    assert _raw(url, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
    huge = f"GET {path} HTTP/1.1\r\nX-Filler: {'a' * (4 * MAX_HEAD)}\r\n\r\n".encode()
    assert _raw(url, huge).startswith(b"HTTP/1.1 431")
    assert _raw(url, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _raw(url, b"GET " + path.encode() + b" HTTP/1.1\r\n").startswith(b"HTTP/1.1 408")  # never finishes its head


def test_the_workers_directory_is_private_and_removed_at_exit(start_replica, tmp_path):
    started = start_replica("metrics_app:app", transport="unix", TMPDIR=str(tmp_path))
    url = re.search(r"metrics (http://\S+/metrics)", started.process.wait_for(" ready at ")).group(1)
    scrape(url)
    (folder,) = tmp_path.glob("anyserve-*/metrics")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert any(name.suffix == ".db" for name in folder.iterdir())  # the worker's files
    started.process.signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while folder.exists():
        assert time.monotonic() < deadline, "the metrics directory outlived the replica"
        time.sleep(0.1)


def test_handlers_in_the_agent_show_their_own_metrics_too(start_replica, wire_for):
    started = start_replica("metrics_app:app", transport="inproc")
    url = re.search(r"metrics (http://\S+/metrics)", started.process.wait_for(" ready at ")).group(1)
    wire_for(started.endpoint).infer(request(x=[1]), {"type": "counted"})
    text = scrape(url)
    assert value(text, "anyserve_test_handled_total") == 1
    assert value(text, "anyserve_replica_requests_total", capability="type=counted", code="OK") == 1


def test_metrics_port_minus_one_serves_none(start_replica):
    started = start_replica("metrics_app:app", "--metrics-port", "-1", transport="unix")
    assert " metrics " not in started.process.wait_for(" ready at ")


def test_the_object_collector_reports_expiries_and_the_stores_size(start_replica, tmp_path):
    root = tmp_path / "objects"
    store = open_store(f"file://{root}")
    old = time.time() - 7200
    for i in range(3):
        store.create(b"x" * 10, key=f"old/{i}")
        os.utime(root / "old" / str(i), (old, old))
    store.create(b"y" * 100, key="fresh")
    started = start_replica(
        "metrics_app:app", "--object-store", f"file://{root}", transport="unix", ANYSERVE_OBJECT_GC_INTERVAL="0.2"
    )
    url = re.search(r"metrics (http://\S+/metrics)", started.process.wait_for(" ready at ")).group(1)
    deadline = time.monotonic() + 30
    while value(text := scrape(url), "anyserve_objects_expired_total") < 3:
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    while "anyserve_objects_bytes" not in families(text := scrape(url)):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert value(text, "anyserve_objects_expired_total") == 3
    assert value(text, "anyserve_objects") == 1
    assert value(text, "anyserve_objects_bytes") == 100
