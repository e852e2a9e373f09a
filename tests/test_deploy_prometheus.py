"""deploy/ against a real Prometheus: the scrape config reaches a real router and replica with the admin token, and
every dashboard query evaluates there. Needs the ``prometheus`` binary on the path (skipped without it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from processes import Process, free_port, run_anyserve

from anyserve.config import load_settings
from anyserve.credentials import ADMIN_TOKEN_FILE, state_dir

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary on the path")
#: Panels that must show data under the load below (the others may be empty: no switch, no object).
MUST_HAVE_DATA = (
    "Request rate by capability",
    "Request latency p50 / p99",
    "Time to first token p50 / p99",
    "Inter-token latency p50 / p99",
    "Tokens/s by capability",
    "In flight and queued at the replicas",
    "Routing decision time p50 / p99",
    "Worker states",
)


def _load(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        turn = 0
        while not stop.is_set():
            turn += 1
            stream = turn % 2 == 0
            client.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": "tiny-chat",
                    "messages": [{"role": "user", "content": "hello big world"}],
                    "stream": stream,
                    **({"stream_options": {"include_usage": True}} if stream else {}),
                },
            )


@pytest.fixture(scope="module")
def prometheus_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A router, a replica with a fixed metrics port, under load, scraped every second by Prometheus with
    deploy/prometheus/prometheus.yml (targets and paths filled in); yields Prometheus's API URL."""
    work = tmp_path_factory.mktemp("prometheus")
    started: list[Process] = []
    prometheus = None
    stop = threading.Event()
    loader = None
    try:
        port, metrics_port = free_port(), free_port()
        router = run_anyserve("router", "--port", str(port))
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica = run_anyserve(
            "start", "--app", "llm_app:app", "--port", str(free_port()), "--api-server", url,
            "--metrics-port", str(metrics_port),
        )  # fmt: skip
        started.append(replica)
        replica.wait_for(" ready at ")
        token = work / "admin.token"
        shutil.copy(state_dir(load_settings()) / ADMIN_TOKEN_FILE, token)
        token.chmod(0o600)
        (work / "replicas.json").write_text("[]")
        config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
        for old, new in {
            "/etc/prometheus/anyserve/": f"{work}/",
            "127.0.0.1:8080": f"127.0.0.1:{port}",
            "127.0.0.1:9101": f"127.0.0.1:{metrics_port}",
            "scrape_interval: 15s": "scrape_interval: 1s",
            "scrape_timeout: 10s": "scrape_timeout: 1s",
        }.items():
            assert old in config, old
            config = config.replace(old, new)
        (work / "prometheus.yml").write_text(config)
        api_port = free_port()
        assert PROMETHEUS is not None
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{api_port}"],
            stdout=(work / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        loader = threading.Thread(target=_load, args=(url, stop), daemon=True)
        loader.start()
        api = f"http://127.0.0.1:{api_port}/api/v1"
        deadline = time.monotonic() + 90
        while True:  # both targets scraped, and enough of the load seen for rates over 15s
            try:
                targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
                rate = httpx.get(
                    f"{api}/query", params={"query": "sum(rate(anyserve_router_requests_total[15s]))"}, timeout=5
                ).json()["data"]["result"]
                if len(targets) == 2 and all(t["health"] == "up" for t in targets) and rate:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (work / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)
        yield api
    finally:
        stop.set()
        if loader is not None:
            loader.join(timeout=30)
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        for process in started:
            process.kill_group()


def test_both_jobs_are_up_with_the_admin_token(prometheus_api):
    targets = httpx.get(f"{prometheus_api}/targets", timeout=10).json()["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {"anyserve-router": "up", "anyserve-replicas": "up"}


def test_every_dashboard_query_evaluates(prometheus_api):
    dashboard = json.loads((DEPLOY / "grafana" / "anyserve-dashboard.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "15s").replace("$capability", ".*")
            answer = httpx.get(f"{prometheus_api}/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", (panel["title"], expr, answer.get("error"))
            if not answer["data"]["result"]:
                empty.append(panel["title"])
    assert not set(MUST_HAVE_DATA) & set(empty), sorted(set(MUST_HAVE_DATA) & set(empty))
    values = httpx.get(f"{prometheus_api}/label/capability/values", timeout=10).json()["data"]
    assert "model=tiny-chat,type=chat" in values  # what the dashboard's capability variable lists
