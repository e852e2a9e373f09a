"""Take ``docs/images/console.png``: a real router and two replicas, some traffic, the console in headless Chromium.

Run from the repository root with the development environment
(``pip install -r requirements-dev.txt`` brings playwright; Chromium comes
from the system, ``apt-get install chromium``)::

    .venv/bin/python docs/images/make_console_screenshot.py

Everything runs on free loopback ports with its own state directory, and
is stopped at the end. The replicas are the examples' apps: ``switching``
(two simulated models sharing one "gpu", so asking for both switches
workers) and ``basic``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "console.png"
ECHO = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], cwd: Path, ready: str) -> subprocess.Popen[str]:
    """``anyserve ARGS`` in its own process group, returned once it printed ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyserve_cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
            return proc
    raise SystemExit(f"anyserve {' '.join(args)} exited before it was ready")


@contextmanager
def cluster(state: str) -> Iterator[tuple[str, str]]:
    env = {**os.environ, "ANYSERVE_STATE_DIR": state, "PYTHONUNBUFFERED": "1", "LOAD_SECONDS": "0.6"}
    router_url = f"http://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(start(["router", "--port", router_url.rsplit(":", 1)[1]], env, ROOT, " ready at "))
        for folder, extra in (("switching", ["--resources", "gpus=1", "--replica-id", "gpu-box"]),
                              ("basic", ["--replica-id", "cpu-box"])):  # fmt: skip
            args = ["start", "--app", "app:app", "--port", str(free_port()), "--api-server", router_url, *extra]
            procs.append(start(args, env, ROOT / "examples" / folder, " ready at "))
        admin = (Path(state) / "admin.token").read_text().strip()
        yield router_url, admin
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def traffic(url: str, rounds: int) -> None:
    """Unary calls, streamed chats on both models (switching the gpu box), and some that fail."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(rounds):
            model = "llama-8b" if i % 4 < 2 else "mistral-7b"
            body = {"model": model, "stream": True, "messages": [{"role": "user", "content": f"tell me story {i}"}]}
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                response.read()
            for _ in range(6):
                http.post("/infer", json=ECHO, headers={"X-Capability-Type": "echo"})
            if i % 3 == 0:
                http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "translate"})  # 404
                http.post("/infer", json={"inputs": []}, headers={"X-Capability-Type": "add"})  # 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default=os.environ.get("ANYSERVE_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="anyserve-console-") as tmp,
        cluster(tmp) as (url, admin),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page.goto(f"{url}/console#token={admin}")
        page.wait_for_selector("#replicas td.mono")
        traffic(url, args.rounds)
        page.wait_for_timeout(2500)  # one more poll after the last request, while the rate still shows
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
