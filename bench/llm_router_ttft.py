"""What a router adds to the time to first token, measured where a millisecond shows: in front of a no-compute engine.

    .venv/bin/python bench/llm_router_ttft.py               # ~1 min
    .venv/bin/python bench/llm_router_ttft.py --requests 100 --rounds 4

bench/llm_bench.py measures the routers in front of real llama.cpp engines,
where a prompt's prefill takes hundreds of milliseconds and varies by tens
between runs: a router's own millisecond does not show there. Here the
engine is bench/servers/openai_floor.py, an OpenAI-compatible server that
answers at once (``/health``, ``/v1/models``, streamed chat completions,
llama-server's shape), on the engine core; each router fronts it as in
llm_bench.py, on the other core with this client. One streamed chat
completion at a time (16 tokens), each system in turn for ``--requests``
requests a round, the order reversed every other round. TTFT is from
sending the request to the first content chunk; the figure is its p50,
and what each router adds to the engine reached directly. Results go to
bench/results/llm-router-ttft-<date>-<time>-<host>.md (+ .json) and
bench/results/llm-router-ttft-latest.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import llm_systems  # noqa: E402
import results_files  # noqa: E402
from llm_systems import ENGINE_CPU, FRONT_CPU, MODEL, Context, Endpoint, Engines, log  # noqa: E402
from processes import Processes, start_run  # noqa: E402

#: The model a no-compute replica serves (bench/servers/bench_app.py), in place of the in-replica plugin's.
REPLICA_MODEL = "bench-tokens"


def replica(ctx: Context) -> Endpoint:
    """The router and a replica serving a no-compute chat handler: the in-replica plugin's path, with no engine in it.

    The replica and its worker on the engine core, as the plugin's are;
    ``bench-tokens`` (bench/servers/bench_app.py) yields its tokens at once,
    through the LLM handler convention the llama.cpp plugin is written to.
    """
    port = llm_systems.free_port()
    base = f"http://127.0.0.1:{port}"
    router_cmd = [llm_systems.anyserve_bin(), "router", "--host", "127.0.0.1", "--port", str(port)]
    router = ctx.procs.start("anyserve-router-replica", router_cmd, FRONT_CPU)
    llm_systems.wait_health(base, router)
    cmd = [
        llm_systems.anyserve_bin(), "start", "--app", "bench_app:app", "--transport", "unix", "--workers", "1",
        "--host", "127.0.0.1", "--port", "0", "--api-server", base, "--replica-id", "bench",
    ]  # fmt: skip
    started = ctx.procs.start("anyserve-replica-bench", cmd, ENGINE_CPU)
    llm_systems.wait_ready(base, [router, started], model=REPLICA_MODEL)
    return Endpoint(
        [base],
        [router],
        [f"taskset -c {FRONT_CPU} " + " ".join(router_cmd), f"taskset -c {ENGINE_CPU} " + " ".join(cmd)],
    )


#: The systems, in the order of odd rounds: (key, label, how it is started, the model asked for).
SYSTEMS = (
    ("direct", "direct to the engine", llm_systems.direct, MODEL),
    ("anyserve", "anyserve router → engine server", llm_systems.anyserve_engines, MODEL),
    ("smg", "smg → engine server", llm_systems.smg, MODEL),
    ("vllm-router", "vllm-router → engine server", llm_systems.vllm_router, MODEL),
    ("anyserve-replica", "anyserve router → replica (no-compute chat handler)", replica, REPLICA_MODEL),
)
#: Most a router may add to the TTFT p50 (bench/llm_bench.py's target, measured here at its resolution).
TARGET_MS = 2.0
#: Rounds, each system in turn, the order reversed every other one.
ROUNDS = 4


def body(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def has_content(line: str) -> bool:
    """An SSE line carrying a chunk with non-empty ``choices[0].delta.content``."""
    if not line.startswith("data:") or '"content"' not in line:
        return False
    payload = line[5:].strip()
    if payload == "[DONE]":
        return False
    choices = json.loads(payload).get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def first_token_ms(client: httpx.Client, url: str, model: str) -> float:
    """One streamed chat completion read to its end; milliseconds to its first content chunk."""
    first = None
    started = time.perf_counter()
    with client.stream("POST", url, json=body(model)) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code} from {url}: {resp.read()[:200]!r}")
        for line in resp.iter_lines():
            if first is None and has_content(line):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no content chunk from {url}")
    return (first - started) * 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="requests per system and round (default 200)")
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"order reversed every other one (default {ROUNDS})")
    p.add_argument("--out", type=Path, help="write the report here instead of bench/results")
    return p.parse_args(argv)


def measure(procs: Processes, work: Path, peers: Path | None, peers_reason: str, requests: int, rounds: int) -> dict:
    """The no-compute engine and each system in front of it, measured; whatever it started is stopped."""
    before = list(procs.running)
    try:
        port = llm_systems.free_port()
        cmd = [sys.executable, str(HERE / "servers" / "openai_floor.py"), "--port", str(port), "--model", MODEL]
        engine = procs.start("openai-floor", cmd, ENGINE_CPU)
        url = f"http://127.0.0.1:{port}"
        llm_systems.wait_engines([url], [engine])
        engines = Engines([url], [engine], [f"taskset -c {ENGINE_CPU} " + " ".join(cmd)], "openai_floor.py")
        ctx = Context(procs, work, engines, 1, 0, peers, peers_reason)
        endpoints: dict[str, Endpoint] = {}
        results: dict[str, dict[str, Any]] = {}
        models = {key: model for key, _, _, model in SYSTEMS}
        for key, label, start, _ in SYSTEMS:
            results[key] = {"label": label, "rounds": [], "commands": []}
            try:
                endpoints[key] = start(ctx)
                results[key]["commands"] = endpoints[key].commands
            except llm_systems.Unavailable as exc:
                results[key]["unavailable"] = str(exc)
                log(f"llm_router_ttft: {label}: not available: {exc}")
        order = [key for key, *_ in SYSTEMS if key in endpoints]
        with httpx.Client(timeout=30.0) as client:
            for key in order:  # warm: connections made, caches filled
                for _ in range(20):
                    first_token_ms(client, endpoints[key].targets[0] + "/v1/chat/completions", models[key])
            for round_ in range(rounds):
                for key in order if round_ % 2 == 0 else order[::-1]:
                    target = endpoints[key].targets[0] + "/v1/chat/completions"
                    times = [first_token_ms(client, target, models[key]) for _ in range(requests)]
                    results[key]["rounds"].append(times)
                    p50 = statistics.median(times)
                    log(f"llm_router_ttft: round {round_ + 1}: {results[key]['label']}: p50 {p50:.2f} ms")
    finally:
        for proc in [p for p in procs.running if p not in before]:
            procs.stop(proc)
    return {
        "config": {"requests": requests, "rounds": rounds, "engine_cpu": ENGINE_CPU, "front_cpu": FRONT_CPU},
        "engine_command": engines.commands[0],
        "results": results,
    }


def added_ms(data: dict[str, Any], key: str) -> float | None:
    """``key``'s TTFT p50 less the engine's reached directly, or ``None`` when either was not measured."""
    results = data["results"]
    mine = [t for r in results.get(key, {}).get("rounds", []) for t in r]
    direct = [t for r in results["direct"]["rounds"] for t in r]
    if not mine or not direct:
        return None
    return statistics.median(mine) - statistics.median(direct)


def section(data: dict[str, Any]) -> list[str]:
    """The table and how it was measured, as markdown lines (this script's report, and a section of llm_bench's)."""
    cfg, results = data["config"], data["results"]
    lines = [
        f"One streamed chat completion at a time (16 tokens), {cfg['requests']} per system and round, "
        f"{cfg['rounds']} rounds, the order reversed every other round, in front of a no-compute engine "
        f"(`bench/servers/openai_floor.py`, answering at once) on CPU {cfg['engine_cpu']}; the routers and the "
        f"client on CPU {cfg['front_cpu']}. TTFT: from sending the request to the first content chunk.",
        "",
        "| system | TTFT p50 (ms) | added to direct (ms) | p50 per round (ms) |",
        "|---|---:|---:|---|",
    ]
    for key, entry in results.items():
        if entry.get("unavailable"):
            lines.append(f"| {entry['label']} | not available: {entry['unavailable']} | | |")
            continue
        times = [t for r in entry["rounds"] for t in r]
        per_round = " / ".join(f"{statistics.median(r):.2f}" for r in entry["rounds"])
        added = added_ms(data, key)
        shown = "—" if key == "direct" or added is None else f"{added:+.2f}"
        lines.append(f"| {entry['label']} | {statistics.median(times):.2f} | {shown} | {per_round} |")
    lines += ["", "```", data["engine_command"], *[c for e in results.values() for c in e.get("commands", [])], "```"]
    return lines


def main(argv: list[str] | None = None) -> int:
    from llm_bench import peer_routers  # llm_bench imports this module

    args = parse_args(argv)
    started = datetime.datetime.now()
    work, procs = start_run("llm-router-ttft-", FRONT_CPU)
    log(f"llm_router_ttft: logs in {work}")
    try:
        peers, peers_reason = peer_routers("llm_router_ttft")
        data = measure(procs, work, peers, peers_reason, args.requests, args.rounds)
    finally:
        procs.stop_all()
    added = added_ms(data, "anyserve")
    verdict = "not measured" if added is None else f"{added:+.2f} ms {'✅' if added <= TARGET_MS else '❌'}"
    command = "python bench/llm_router_ttft.py" + "".join(f" {a}" for a in sys.argv[1:])
    lines = [
        f"# What a router adds to the first token — {started:%Y-%m-%d %H:%M} on {platform.node()}",
        "",
        f"`{command}` (anyserve at {results_files.tree_label()})",
        "",
        *section(data),
        "",
        f"Target: anyserve adds at most {TARGET_MS:g} ms to the TTFT p50: {verdict}.",
    ]
    text = "\n".join(lines)
    print(text)
    results_files.save("llm-router-ttft", started, text, {"started": f"{started:%Y-%m-%d %H:%M}", **data}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
