"""``anyserve top --once`` against a real router and replica: the registry part always, metrics where served."""

from __future__ import annotations

import math
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from processes import APPS, free_port, router_with_replica, sigint_as_in_a_terminal

from anyserve.config import load_settings
from anyserve.credentials import Credentials, bearer
from anyserve.metric_names import capability_label
from anyserve_cli.top_cmd import CLEAR
from anyserve_cli.top_metrics import REQUESTS, Scrape, Window, bucket_quantile


def _top(*args: str, interval: str = "0.3", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "top", "--once", "--no-color", "--interval", interval, *args],
        cwd=APPS,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with router_with_replica("llm_app:app", replica_id="top-llm-1") as url:
        yield url


def test_once_shows_the_replica_its_capabilities_and_the_traffic(cluster):
    for _ in range(3):
        answer = httpx.post(
            f"{cluster}/v1/chat/completions",
            json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hello"}]},
            timeout=30,
        )
        assert answer.status_code == 200
    done = _top("--router", cluster)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # not a terminal, --no-color: plain text
    assert "top-llm-1" in out
    assert "model=tiny-chat" in out and "type=chat" in out
    metrics = httpx.get(f"{cluster}/metrics", headers=bearer(Credentials.load(load_settings()).admin), timeout=30)
    if metrics.status_code == 404:
        assert "metrics unavailable" in out
        return
    assert metrics.status_code == 200
    assert "traffic by capability" in out
    row = next(line for line in out.splitlines() if capability_label({"type": "chat", "model": "tiny-chat"}) in line)
    cells = [cell.strip() for cell in row.strip("│| ").split("│")]
    assert cells[3] == "3"  # requests so far


def test_an_unreachable_router_is_an_error_exit():
    done = _top("--router", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot reach the router" in done.stdout
    assert "metrics unavailable" in done.stdout


def test_a_wrong_admin_token_still_shows_the_registry(cluster):
    done = _top("--router", cluster, interval="0.1", env={"ANYSERVE_ADMIN_TOKEN": "not-the-admin-token"})
    assert done.returncode == 0, done.stderr
    assert "top-llm-1" in done.stdout
    assert "metrics unavailable" in done.stdout


def test_quantiles_interpolate_within_buckets_as_prometheus_does():
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.7, buckets) == pytest.approx(0.3)
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.95)
    assert bucket_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert bucket_quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == pytest.approx(0.1)  # past the last finite bound


def test_rates_are_the_difference_of_two_scrapes_and_survive_a_restart():
    text = '# TYPE {n} counter\n{n}{{front="kserve",capability="type=a",code="{code}"}} {v}\n'
    name = REQUESTS
    before = Scrape.parse(text.format(n=name, code="200", v=10), at=100.0)
    after = Scrape.parse(text.format(n=name, code="200", v=30), at=102.0)
    assert Window(before, after).rate(name) == pytest.approx(10.0)
    assert Window(before, after).rate(name, errors_only=True) == 0
    restarted = Scrape.parse(text.format(n=name, code="200", v=4), at=104.0)
    assert Window(after, restarted).rate(name) == pytest.approx(2.0)
    failing = Scrape.parse(text.format(n=name, code="503", v=6), at=106.0)
    assert Window(restarted, failing).rate(name, errors_only=True) == pytest.approx(3.0)


def test_on_a_terminal_each_frame_clears_the_screen_and_starts_home(cluster):
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "anyserve_cli", "top", "--interval", "0.2", "--router", cluster],
        cwd=APPS,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160"},
        preexec_fn=sigint_as_in_a_terminal,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while seen.count(CLEAR.encode()) < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        os.close(leader)
    assert seen.count(CLEAR.encode()) >= 3, seen[-2000:]
    frame = seen.rsplit(CLEAR.encode(), 2)[1].decode(errors="replace")
    assert "top-llm-1" in frame
    assert "\x1b[" in frame  # coloured
    assert process.returncode == 0  # Ctrl-C ends it quietly
