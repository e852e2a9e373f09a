"""The engines and the routers bench/routing_bench.py measures.

The engines are llama-server with its prompt caching as it ships: ``cache_prompt``
on (a slot keeps its last prompt's KV between requests), a new request taking
the idle slot whose cached prompt shares the most with it
(``--slot-prompt-similarity`` 0.1). Its host-memory prompt cache (``--cache-ram``,
8 GiB as it ships) is off unless ``--cache-ram`` says otherwise: an engine then
caches what its slots hold, as a GPU engine caches what its KV pool holds.
``--cache-reuse`` (reusing chunks that moved, by shifting the KV) stays off, as
it ships: these prompts only grow at the end. The one flag added is
``--metrics``, which reads the cache counters and changes nothing else, and
the one variable ``LLAMA_SERVER_SLOTS_DEBUG=1``, with which ``GET /slots``
also lists what each slot holds: anyserve's ``prefix`` scorer reads it
(its precise half; the ``prefix-learned`` row turns that off), the peers
do not read it.

Unlike bench/llm_bench.py, which keeps its engines for the whole run, every
system here gets freshly started engines: a router is judged by what its choices
make the engines cache, so no system may find a cache another one filled.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llm_systems
from llm_systems import (
    ENGINE_CPU,
    FRONT_CPU,
    MODEL,
    Context,
    Endpoint,
    Engines,
    anyserve_routed,
    free_port,
    http_get,
)
from processes import Managed, Processes

#: llama-server's prometheus counters read per engine (``llamacpp:<name>``).
COUNTERS = ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total")
#: Every engine lists its slots' prompts in ``GET /slots``, for every system alike.
SLOTS_LISTED = {"LLAMA_SERVER_SLOTS_DEBUG": "1"}


def engine_command(binary: Path, port: int, slots: int, ctx_per_slot: int, cache_ram: int | None = None) -> list[str]:
    """llama-server as it ships, plus ``--metrics``; ``cache_ram`` (MiB) sizes its host-memory prompt cache."""
    return [
        str(binary), "-m", str(llm_systems.gguf_path()), "--alias", MODEL, "--host", "127.0.0.1",
        "--port", str(port), "-t", "1", "-tb", "1", "--parallel", str(slots), "-c", str(ctx_per_slot * slots),
        "--metrics", "--no-webui", *([] if cache_ram is None else ["--cache-ram", str(cache_ram)]),
    ]  # fmt: skip


def engine_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    line = next((ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("version")), "version: ?")
    return line.split(":", 1)[1].strip()


def start_engines(
    procs: Processes, binary: Path, tag: str, count: int, slots: int, ctx_per_slot: int, cache_ram: int | None = None
) -> Engines:
    """``count`` fresh llama-server processes on the engine core, each answering a chat before this returns."""
    urls, started, commands = [], [], []
    for i in range(count):
        port = free_port()
        cmd = engine_command(binary, port, slots, ctx_per_slot, cache_ram)
        started.append(procs.start(f"{tag}-engine-{i + 1}", cmd, ENGINE_CPU, env=SLOTS_LISTED))
        urls.append(f"http://127.0.0.1:{port}")
        commands.append(f"LLAMA_SERVER_SLOTS_DEBUG=1 taskset -c {ENGINE_CPU} " + " ".join(cmd))
    llm_systems.wait_engines(urls, started)
    return Engines(urls, started, commands, engine_version(binary))


def engine_counters(url: str) -> dict[str, float]:
    """The cache counters of one engine's ``/metrics``: prompt tokens computed, read from cache, generated."""
    status, text = http_get(url + "/metrics")
    if status != 200:
        return {}
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("llamacpp:"):
            name, _, value = line[len("llamacpp:") :].partition(" ")
            if name in COUNTERS:
                out[name] = float(value)
    return out


#: The line llama-server logs for every prompt it reads (``print_timing``), milliseconds with two decimals.
PREFILL_LINE = re.compile(r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")


def attribute(records: list, engines: list[Managed]) -> None:
    """Set each record's ``engine`` (1-based) from the engines' logs, where exactly one prefill matches it.

    No router says where it sent a request, and llama-server's answer does not name the server; but each
    engine logs every prompt it read with its token count and time, and the answer carries the same two
    figures (``timings.prompt_n``, ``timings.prompt_ms``). A record matching no line, or lines of two
    engines, keeps ``engine`` None.
    """
    logged: dict[int, list[tuple[int, float]]] = {}
    for number, proc in enumerate(engines, 1):
        for match in PREFILL_LINE.finditer(proc.output()):
            logged.setdefault(int(match.group(2)), []).append((number, float(match.group(1))))
    for rec in records:
        if rec.prompt_n is None or rec.prompt_ms is None:
            continue
        found = {number for number, ms in logged.get(rec.prompt_n, ()) if abs(ms - rec.prompt_ms) < 0.006}
        if len(found) == 1:
            rec.engine = found.pop()


# --------------------------------------------------------------------------------------------- systems


@dataclass(frozen=True)
class RoutingSystem:
    key: str
    label: str
    start: Callable[[Context], Endpoint]
    #: "floor" (no router), "anyserve", or "peer": the targets compare anyserve's prefix routing with peers.
    kind: str


def direct(ctx: Context) -> Endpoint:
    """No router: user ``u`` always to engine ``u mod engines``, so each engine holds its users' conversations."""
    return Endpoint(
        list(ctx.engines.urls),
        notes="each user's every turn to engine (user mod engines): sticky and balanced, with no router",
    )


def peer(name: str, policy: str) -> Callable[[Context], Endpoint]:
    """smg or vllm-router over the engines with ``policy``, otherwise started as bench/llm_bench.py starts them."""

    def start(ctx: Context) -> Endpoint:
        exe = llm_systems._peer(ctx, name)
        port = free_port()
        launch = [str(exe), "launch"] if name == "smg" else [str(exe)]
        extra = ["--health-check-endpoint", "/health", "--log-level", "warn"] if name == "smg" else [
            "--log-level", "warning"]  # fmt: skip
        cmd = [
            *launch, "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *ctx.engines.urls,
            "--policy", policy, *extra, "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
        ]  # fmt: skip
        proc = ctx.procs.start(f"{name}-{policy}", cmd, FRONT_CPU)
        base = f"http://127.0.0.1:{port}"
        llm_systems.wait_started(ctx, base, [proc])
        return Endpoint([base], [proc], [f"taskset -c {FRONT_CPU} " + " ".join(cmd)])

    return start


SYSTEMS = [
    RoutingSystem("direct", "direct, user u → engine u mod engines (no router)", direct, "floor"),
    RoutingSystem("round-robin", "anyserve, round robin", anyserve_routed("round_robin", ""), "anyserve"),
    RoutingSystem("least-load", "anyserve, least load", anyserve_routed("highest", "least_load=1"), "anyserve"),
    RoutingSystem("prefix", "anyserve, prefix-aware", anyserve_routed("highest", "prefix=2,least_load=1"), "anyserve"),
    RoutingSystem(
        "prefix-learned",
        "anyserve, prefix-aware, learned only",
        anyserve_routed("highest", "prefix=2,least_load=1", "[routing.options.prefix]\nprecise = false\n"),
        "anyserve",
    ),
    RoutingSystem("session", "anyserve, session", anyserve_routed("highest", "session=2,least_load=1"), "anyserve"),
    RoutingSystem("smg", "smg, cache_aware", peer("smg", "cache_aware"), "peer"),
    RoutingSystem("vllm-router", "vllm-router, cache_aware", peer("vllm-router", "cache_aware"), "peer"),
    RoutingSystem("vllm-router-hash", "vllm-router, consistent_hash", peer("vllm-router", "consistent_hash"), "peer"),
]
#: Run unless --systems names others: the last row is the peers' session policy, for comparison when asked for.
DEFAULT_SYSTEMS = [s.key for s in SYSTEMS if s.key != "vllm-router-hash"]
