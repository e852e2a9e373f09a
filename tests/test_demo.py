"""`anyserve demo` walks every scenario and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from processes import run_anyserve


def demo_processes() -> list[int]:
    """Processes still running a demo replica or router (matched by their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"anyserve_cli.demo.apps" in cmdline or (b"anyserve-demo-" in cmdline and b"worker_main" in cmdline):
                pids.append(int(entry.name))
    return pids


def test_demo_runs_every_scenario_and_cleans_up():
    out = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "demo", "--load-seconds", "0.3"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for marker in (
        "served by chat",
        "served by heavy",
        "HTTP 404",
        "delegated by chat through the router",
        "checksum matches: True",
        # demo-small, one function on the LLM convention: unary over /infer, streamed over /infer/stream ...
        '(demo-small) you said "hello router". Capability routing sends each request where it can be served.',
        '(demo-small) you said "stream it". Capability routing sends each request where it can be served.',
        # ... and through the router's OpenAI API, called with the official openai SDK
        "client.models.list() -> ['demo-small']",
        '(demo-small) you said "what does the router do?". Capability routing sends each request where it can be',
        "finish_reason=stop, usage: 5 prompt + 18 completion tokens",
        "max_tokens=4, unary: '(demo-small) you said \"what' (finish_reason=length)",
        "(switch)",
        "stopping the cluster",
    ):
        assert marker in text, f"{marker!r} missing from:\n{text}"
    assert "Traceback" not in out.stdout + out.stderr
    time.sleep(0.5)
    assert demo_processes() == []


def test_keep_running_prints_commands_and_stops_on_ctrl_c():
    process = run_anyserve("demo", "--keep-running", "--load-seconds", "0.1")
    try:
        process.wait_for("curl -s", timeout=120)
        assert demo_processes()
        # The OpenAI API call it prints streams demo-small's answer as chat completion chunks.
        curl = process.wait_for("/v1/chat/completions", timeout=30).strip()
        assert curl.startswith("curl -sN http") and '"model":"demo-small"' in curl, curl
        streamed = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60)
        assert streamed.returncode == 0, streamed.stderr
        assert '"object":"chat.completion.chunk"' in streamed.stdout and '"finish_reason":"stop"' in streamed.stdout
        assert streamed.stdout.rstrip().endswith("data: [DONE]"), streamed.stdout
        # The status command it prints works as printed in a new terminal, whose PATH has no venv on it.
        status = process.wait_for(" status http", timeout=30).strip()
        bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "COLUMNS": "200"}
        shown = subprocess.run(status, shell=True, env=bare, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, f"{status!r} failed: {shown.stderr}"
        assert "heavy" in shown.stdout
        process.signal(signal.SIGINT)
        assert process.proc.wait(timeout=30) == 0
        assert "anyserve status" in process.output()
        deadline = time.monotonic() + 10
        while demo_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert demo_processes() == []
    finally:
        process.kill_group()
