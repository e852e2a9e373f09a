"""`anyserve demo` walks every scenario and leaves no process behind.

Its OpenAI step calls the real SmolLM2-135M chat model where the llama.cpp
engine plugin is installed, and the simulated demo-small where it is not:
the real branch is tested where the engine is installed (marked like every
real-model test), the simulated one everywhere, with the plugin hidden by
``ANYSERVE_DISABLE_PLUGINS=llamacpp`` or left out by ``--simulated``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import installs
import pytest
from processes import run_anyserve

from anyserve.plugins import create_plugin_manager
from anyserve_cli.demo import real_model


def demo_processes() -> list[int]:
    """Processes still running a demo replica or router (matched by their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            # the apps' replicas, and every member's command line naming the demo's object store (its temporary
            # folder): the real model's replica (no --app) and every worker
            if b"anyserve_cli.demo.apps" in cmdline or (
                b"anyserve-demo-" in cmdline and (b"worker_main" in cmdline or b"anyserve_cli" in cmdline)
            ):
                pids.append(int(entry.name))
    return pids


def run_demo(*args: str, **env: str) -> str:
    """``anyserve demo ARGS`` to the end; its output, once it has exited cleanly and left nothing running."""
    out = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "demo", "--load-seconds", "0.3", *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    time.sleep(0.5)
    assert demo_processes() == []
    return out.stdout


#: What every run shows, whichever chat model the OpenAI step calls.
EVERY_RUN = (
    "served by chat",
    "served by heavy",
    "HTTP 404",
    "delegated by chat through the router",
    "checksum matches: True",
    # demo-small, one function on the LLM convention: unary over /infer, streamed over /infer/stream
    '(demo-small) you said "hello router". Capability routing sends each request where it can be served.',
    '(demo-small) you said "stream it". Capability routing sends each request where it can be served.',
    "(switch)",
    "stopping the cluster",
)


def check_markers(text: str, markers: tuple[str, ...]) -> None:
    for marker in markers:
        assert marker in text, f"{marker!r} missing from:\n{text}"


def test_demo_runs_every_scenario_and_cleans_up():
    """The simulated chat model in the OpenAI step: the engine plugin hidden, as where it is not installed."""
    text = run_demo(ANYSERVE_DISABLE_PLUGINS="llamacpp")
    check_markers(text, EVERY_RUN)
    check_markers(text, (
        "starting a router and three replicas",
        # demo-small through the router's OpenAI API, called with the official openai SDK; one line says why
        "the real model's plugin (anyserve-engine-llamacpp) is disabled by ANYSERVE_DISABLE_PLUGINS: "
        "the simulated demo-small stands in",
        "client.models.list() -> ['demo-small']",
        '(demo-small) you said "what does the router do?". Capability routing sends each request where it can be',
        "finish_reason=stop, usage: 5 prompt + 18 completion tokens",
        "max_tokens=4, unary: '(demo-small) you said \"what' (finish_reason=length)",
    ))  # fmt: skip
    assert "smollm2-135m" not in text


def test_without_the_engine_the_demo_says_how_to_install_the_real_model():
    """Where the plugin is not installed, one line names the install script (and ./dev test, which runs it)."""
    found, why = real_model.find(create_plugin_manager(entrypoints=False, env={}))
    assert found is None
    assert "demo-small is simulated" in why and "SmolLM2-135M on llama.cpp" in why, why
    assert "`plugins/anyserve-engine-llamacpp/install.sh .venv`" in why and "`./dev test` installs it too" in why, why
    found, why = real_model.find(create_plugin_manager(entrypoints=False, env={}), simulated=True)
    assert found is None and why.startswith("--simulated: the simulated demo-small stands in"), why


@pytest.mark.model
@pytest.mark.engine
def test_demo_serves_the_real_chat_model_when_installed():
    missing = installs.missing(installs.ENGINE)
    if missing is not None:
        pytest.skip(f"{missing}: run plugins/anyserve-engine-llamacpp/install.sh (optional engine install)")
    began = time.monotonic()
    text = run_demo()
    print(f"the demo took {time.monotonic() - began:.1f}s")
    check_markers(text, EVERY_RUN)
    check_markers(text, (
        "starting a router and four replicas",
        "(smollm2-135m on llama.cpp: the engine plugin, no --app)",
        "a real chat model through the router's OpenAI API",
        'model="smollm2-135m" routes to {type: chat, model: smollm2-135m}, SmolLM2-135M-Instruct on llama.cpp',
        "client.models.list() -> ['demo-small', 'smollm2-135m']",
        "(the model loads on first use: worker class LlamaCpp started in ",
        "client.chat.completions.create(model='smollm2-135m', messages=..., stream=True, temperature=0):",
        # greedy, so the same answer every run
        "  A router is a device that connects devices to the internet",
        "max_tokens=4, unary: 'A router is a' (finish_reason=length)",
    ))  # fmt: skip
    assert re.search(r"finish_reason=stop, usage: \d+ prompt \+ \d+ completion tokens", text), text
    assert re.search(r"first token after \d+ ms, then \d+ tokens/s \(\d+\.\d\ds in all\)", text), text
    assert "demo-small is simulated" not in text and "--simulated" not in text


def test_keep_running_prints_commands_and_stops_on_ctrl_c():
    # --simulated: no real model, wherever it is installed (the flag's own test)
    process = run_anyserve("demo", "--keep-running", "--simulated", "--load-seconds", "0.1")
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
        output = process.output()
        assert "anyserve status" in output and "--simulated: the simulated demo-small stands in" in output
        assert "smollm2-135m" not in output
        deadline = time.monotonic() + 10
        while demo_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert demo_processes() == []
    finally:
        process.kill_group()
