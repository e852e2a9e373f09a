"""What the stock-client interop tests share: the servers, running a client script, and the checks.

A replica serves ``tests/apps/interop_app.py`` on its own (gRPC only), and a
router with ``--grpc-port`` fronts a second replica that registered itself
(``--api-server``), so the router learns the declared tensors as a user's
replica would tell it. Both start on first use and are killed, process
group and all, when the test module ends, failed or not. Each client script
runs in its own process and prints a JSON report (see client_report.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from processes import Process, free_port, run_anyserve

HERE = Path(__file__).resolve().parent
APP = "interop_app:app"
STARTUP_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 180.0

#: What ``mixed`` answers for client_report.INPUTS, per output: datatype, numpy dtype, shape, values.
EXPECTED_OUTPUTS: dict[str, tuple[str, str, list[int], list[Any]]] = {
    "text_out": ("BYTES", "object", [2], ["HELLO", "WÖRLD"]),
    "x_out": ("FP32", "float32", [3], [1.0, -2.5, 6.0]),
    "n_out": ("INT64", "int64", [3], [2, -6, 2**40 + 1]),
}
#: What ``mixed`` declares.
EXPECTED_INPUTS_META = [
    {"name": "text", "datatype": "BYTES", "shape": [-1]},
    {"name": "x", "datatype": "FP32", "shape": [-1]},
    {"name": "n", "datatype": "INT64", "shape": [-1]},
]
EXPECTED_OUTPUTS_META = [{"name": n, "datatype": d, "shape": [-1]} for n, (d, *_rest) in EXPECTED_OUTPUTS.items()]


def wait_for_port(port: int, process: Process, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on 127.0.0.1:{port}; output:\n{process.output()}")
        time.sleep(0.05)


def wait_registered(router_url: str, endpoint: str, process: Process, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        replicas = httpx.get(f"{router_url}/registry", timeout=5).json()["replicas"]
        if any(r["endpoint"] == endpoint for r in replicas):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{endpoint} never registered: {replicas}; replica output:\n{process.output()}")
        time.sleep(0.1)


@dataclass
class Servers:
    """Start on first use: a standalone replica, and a router (HTTP + gRPC) in front of another replica."""

    processes: list[Process] = field(default_factory=list)
    _urls: dict[str, str] = field(default_factory=dict)
    _failed: dict[str, str] = field(default_factory=dict)

    def _replica(self, *args: str) -> str:
        port = free_port()
        process = run_anyserve("start", "--app", APP, "--port", str(port), "--transport", "unix", *args)
        self.processes.append(process)
        process.wait_for(" ready at ", timeout=STARTUP_TIMEOUT_S)
        return f"127.0.0.1:{port}"

    def _router(self) -> None:
        http_port, grpc_port = free_port(), free_port()
        router = run_anyserve("router", "--port", str(http_port), "--grpc-port", str(grpc_port))
        self.processes.append(router)
        router.wait_for(" ready at ", timeout=STARTUP_TIMEOUT_S)
        wait_for_port(grpc_port, router)
        http_url = f"http://127.0.0.1:{http_port}"
        endpoint = self._replica("--api-server", http_url)
        wait_registered(http_url, endpoint, self.processes[-1])
        self._urls["router-http"] = http_url
        self._urls["router-grpc"] = f"127.0.0.1:{grpc_port}"

    def url(self, target: str) -> str:
        """``replica`` (gRPC ``host:port``), ``router-grpc`` (``host:port``) or ``router-http`` (``http://...``).

        A start that failed fails every later call at once with the same error.
        """
        group = "replica" if target == "replica" else "router"
        if group in self._failed:
            raise AssertionError(
                f"the {group} did not start (see the first test that needed it):\n{self._failed[group]}"
            )
        if target not in self._urls:
            try:
                if group == "replica":
                    self._urls["replica"] = self._replica()
                else:
                    self._router()
            except AssertionError as exc:
                self._failed[group] = str(exc)
                raise
        return self._urls[target]

    def close(self) -> None:
        for process in self.processes:
            process.kill_group()


def run_client(python: str | Path, script: str, url: str) -> dict[str, Any]:
    """Run ``script`` (in this folder) with ``python`` against ``url``; its JSON report."""
    result = subprocess.run(
        [str(python), str(HERE / script), url],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
        cwd=HERE,
    )
    assert result.returncode == 0, f"{script} {url} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


class Reports:
    """Each (script, target) runs once per module; tests read the cached report."""

    def __init__(self, servers: Servers, python: str | Path, scripts: dict[str, str]) -> None:
        self.servers, self.python, self.scripts = servers, python, scripts
        self._cache: dict[str, dict[str, Any]] = {}
        self._failed: dict[str, str] = {}

    def __call__(self, target: str) -> dict[str, Any]:
        """The report of the target's script; a script that failed or hung fails every later call at once."""
        if target in self._failed:
            raise AssertionError(self._failed[target])
        if target not in self._cache:
            try:
                self._cache[target] = run_client(self.python, self.scripts[target], self.servers.url(target))
            except subprocess.TimeoutExpired as exc:
                self._failed[target] = f"{self.scripts[target]} against {target} ran past {exc.timeout}s"
                raise AssertionError(self._failed[target]) from None
            except AssertionError as exc:
                self._failed[target] = str(exc)
                raise
        return self._cache[target]


# -- checks shared by every client --------------------------------------------


def ok(report: dict[str, Any], key: str) -> Any:
    """The value of a check that must have succeeded; fails with the client's error otherwise."""
    entry = report[key]
    assert "ok" in entry, f"{report['client']}: {key} raised {json.dumps(entry['error'], ensure_ascii=False)}"
    return entry["ok"]


def check_outputs(result: dict[str, Any], binary: dict[str, bool] | None = None) -> None:
    """Every output through ``as_numpy``: values, numpy dtype, shape, datatype (and binary or JSON over HTTP)."""
    for name, (datatype, dtype, shape, values) in EXPECTED_OUTPUTS.items():
        got = result["outputs"][name]
        assert (got["datatype"], got["dtype"], got["shape"], got["values"]) == (datatype, dtype, shape, values), (
            name,
            got,
            result,
        )
        if binary is not None:
            assert got["binary"] is binary[name], (name, got, result)


def check_metadata(meta: dict[str, Any], version: str | None = None) -> None:
    assert meta["name"] == "mixed", meta
    assert meta["inputs"] == EXPECTED_INPUTS_META, meta
    assert meta["outputs"] == EXPECTED_OUTPUTS_META, meta
    if version is not None:
        assert version in meta["versions"], meta


def check_not_found(report: dict[str, Any], key: str, error_type: str, status: str) -> None:
    entry = report[key]
    assert "error" in entry, f"{report['client']}: {key} did not fail: {entry}"
    error = entry["error"]
    assert (error["type"], error["status"]) == (error_type, status), error
    assert "nope" in error["message"], error


def check_health(report: dict[str, Any], versioned: bool = True) -> None:
    assert ok(report, "server_live") is True
    assert ok(report, "server_ready") is True
    assert ok(report, "model_ready") is True
    if versioned:
        assert ok(report, "model_ready_versioned") is True
    assert ok(report, "unknown_ready") is False


def all_binary(value: bool) -> dict[str, bool]:
    return dict.fromkeys(EXPECTED_OUTPUTS, value)
