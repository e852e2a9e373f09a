"""LLM-aware routing on real engines: multi-turn chats with shared system prompts, one system at a time.

    .venv/bin/python bench/routing_bench.py            # ~30 min
    .venv/bin/python bench/routing_bench.py --quick    # ~5 min, a smaller workload (a functional check)
    .venv/bin/python bench/routing_bench.py --systems round-robin,prefix --out /tmp/routing
    .venv/bin/python bench/routing_bench.py --systems prefix,smg --rounds 3   # the peer target, three rounds

llama-server engines of four slots (SmolLM2-135M-Instruct Q4_1, caching what
their slots hold, as a GPU engine caches what its KV pool holds: no host-memory
prompt cache unless ``--cache-ram``) answer users whose conversations share system prompts and grow turn
by turn, so where a request lands decides how much of its prompt the engine
has to compute. Measured in turn, each against freshly started engines: the
users split evenly over the engines with no router (the floor), the anyserve
router with five routing configurations (round robin, least load,
prefix-aware, prefix-aware from its own record only, session), and the peer routers smg and vllm-router with their
cache-aware policies. Results go to bench/results/routing-<date>-<time>-<host>.md
(+ .json) and bench/results/routing-latest.md (+ .json); bench/README.md
explains the set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "interop"))

import llm_systems  # noqa: E402
import results_files  # noqa: E402
import routing_report  # noqa: E402
import routing_systems  # noqa: E402
import routing_workload  # noqa: E402
from llm_bench import cpu_model, peer_routers, versions  # noqa: E402
from llm_report import percentile  # noqa: E402
from llm_systems import ENGINE_CPU, FRONT_CPU, Context, Unavailable, log  # noqa: E402
from processes import Managed, Processes, start_run  # noqa: E402

#: (full, --quick) defaults; any of them can be given on the command line.
SIZES = {
    "prompts": (8, 4),
    "prompt_tokens": (512, 256),
    "users": (24, 8),
    "turns": (4, 3),
    "turn_tokens": (32, 24),
    "max_tokens": (16, 16),
    "concurrency": (8, 4),
    "rampup": (4.0, 2.0),
    "max_seconds": (240.0, 60.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    keys = [s.key for s in routing_systems.SYSTEMS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller workload and time limit (a functional check)")
    for name, (full, quick) in SIZES.items():
        kind = type(full)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"default {full:g}; --quick {quick:g}")
    p.add_argument("--think", default="0.5,2", help="seconds a user waits before a follow-up, 'min,max' (0.5,2)")
    p.add_argument("--engines", type=int, default=4, help="llama-server processes (default 4)")
    p.add_argument("--slots", type=int, default=4, help="llama-server --parallel, per engine (default 4)")
    p.add_argument(
        "--cache-ram",
        type=int,
        default=0,
        metavar="MIB",
        help="llama-server --cache-ram, its host-memory prompt cache. Default 0: none, so an engine caches what its "
        "slots hold, as a GPU engine caches what its KV pool holds; 8192 is llama-server's own default",
    )
    p.add_argument("--ctx-per-slot", type=int, default=4096, help="context tokens per slot (default 4096)")
    p.add_argument("--seed", type=int, default=20261205)
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each system this many times, in turn (default 1); the report gives the median round and "
        "each round's TTFT p50, and counts a peer ahead only by more than the rounds' range",
    )
    p.add_argument(
        "--systems",
        default=",".join(routing_systems.DEFAULT_SYSTEMS),
        help=f"comma-separated, from: {','.join(keys)}",
    )
    p.add_argument("--out", type=Path, help="write the report here instead of bench/results")
    p.add_argument("--no-save", action="store_true", help="print the report only")
    args = p.parse_args(argv)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    low, _, high = args.think.partition(",")
    args.think = (float(low), float(high or low))
    wanted = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = set(wanted) - set(keys)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; known: {keys}")
    args.systems = [s for s in routing_systems.SYSTEMS if s.key in wanted]
    return args


# ------------------------------------------------------------------------------------------ one system


async def drive(
    workload: routing_workload.Workload,
    targets: list[str],
    concurrency: int,
    rampup: float,
    seconds: float,
    front: list[Managed],
    engines: list[Managed],
) -> dict[str, Any]:
    """The workload against ``targets``, with progress on stderr and CPU samples of the system and the engines."""
    total = workload.requests()
    done: list[routing_workload.Record] = []
    started = time.perf_counter()
    last_report = [started]

    def on_record(rec: routing_workload.Record) -> None:
        done.append(rec)
        now = time.perf_counter()
        if now - last_report[0] >= 10 or len(done) == total:
            last_report[0] = now
            ttft = [r.ttft_ms for r in done if r.ttft_ms is not None]
            p50 = percentile(ttft, 50) or 0.0
            errors = sum(1 for r in done if r.error)
            log(f"routing_bench:   {now - started:5.0f}s {len(done)}/{total} requests, TTFT p50 {p50:,.0f} ms"
                + (f", {errors} errors" if errors else ""))  # fmt: skip

    samples: list[Sample] = []

    async def sample() -> None:
        while True:
            samples.append(take_sample(front, engines))
            await asyncio.sleep(0.5)

    if len(targets) == 1:
        target = targets[0]

        def pick(user: routing_workload.User) -> str:
            return target
    else:

        def pick(user: routing_workload.User) -> str:
            return targets[user.index % len(targets)]

    sampler = asyncio.create_task(sample())
    try:
        records = await routing_workload.run(workload, pick, concurrency, rampup, started + seconds, on_record)
    finally:
        sampler.cancel()
    samples.append(take_sample(front, engines))
    routing_systems.attribute(records, engines)
    return {"records": routing_workload.to_json(records), "cpu": cpu_in_window(samples, records)}


#: (time, the system's CPU seconds, each engine's CPU seconds, the engine core's busy seconds)
Sample = tuple[float, float, list[float], float]


def core_busy_seconds(cpu: str) -> float:
    """Busy time of one core since boot, whoever used it (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                fields = [int(x) for x in line.split()[1:]]
                return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def take_sample(front: list[Managed], engines: list[Managed]) -> Sample:
    return (
        time.perf_counter(),
        sum(p.cpu_seconds() for p in front),
        [p.cpu_seconds() for p in engines],
        core_busy_seconds(ENGINE_CPU),
    )


def cpu_in_window(samples: list[Sample], records: list) -> dict[str, Any]:
    """From first send to last answer: the system's CPU seconds, each engine's share of its core, and the share
    of the engine core other processes took (another user's work on this machine slows every engine)."""
    ok = [r for r in records if r.ttft_ms is not None]
    if not ok or len(samples) < 2:
        return {}
    start, end = min(r.start for r in ok), max(r.end for r in ok)
    inside = [s for s in samples if start - 0.5 <= s[0] <= end + 0.5] or samples
    (t0, f0, e0, c0), (t1, f1, e1, c1) = inside[0], inside[-1]
    span = max(1e-9, t1 - t0)
    engines = [(b - a) / span for a, b in zip(e0, e1, strict=True)]
    return {
        "front": (f1 - f0) * (end - start) / span,
        "engines": engines,
        "engine_core_others": max(0.0, (c1 - c0) / span - sum(engines)),
    }


def measure(ctx: Context, system: routing_systems.RoutingSystem, workload, args) -> dict[str, Any]:
    endpoint = system.start(ctx)
    time.sleep(1.0)  # every router has probed every engine (they were all up before it started)
    counters_before = [routing_systems.engine_counters(u) for u in ctx.engines.urls]
    load = drive(
        workload, endpoint.targets, args.concurrency, args.rampup, args.max_seconds, endpoint.procs,
        ctx.engines.procs,
    )  # fmt: skip
    result = asyncio.run(load)
    result.update(
        counters_before=counters_before,
        counters_after=[routing_systems.engine_counters(u) for u in ctx.engines.urls],
        planned=workload.requests(),
        max_tokens=workload.max_tokens,
        commands=endpoint.commands,
        notes=endpoint.notes,
    )
    return result


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    work, procs = start_run("routing-bench-", FRONT_CPU)
    log(f"routing_bench: logs in {work}")
    try:
        return _run(args, started, work, procs)
    finally:
        procs.stop_all()


def _run(args, started: datetime.datetime, work: Path, procs: Processes) -> int:
    loadavg_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    peers, peers_reason = None, ""
    if any(s.kind == "peer" for s in args.systems):
        peers, peers_reason = peer_routers("routing_bench")
    binary = llm_systems.llama_server_binary()
    log("routing_bench: making the conversations (sized with an engine's tokenizer) ...")
    sizer = routing_systems.start_engines(procs, binary, "tokenizer", 1, 1, args.ctx_per_slot)
    workload = routing_workload.build(
        sizer.urls[0], seed=args.seed, prompts=args.prompts, prompt_tokens=args.prompt_tokens, users=args.users,
        turns=args.turns, turn_tokens=args.turn_tokens, max_tokens=args.max_tokens, think=args.think,
    )  # fmt: skip
    for proc in sizer.procs:
        procs.stop(proc)
    log(
        f"routing_bench: {len(workload.users)} users x {args.turns} turns = {workload.requests()} requests per "
        f"system, {args.concurrency} users at a time, at most {args.max_seconds:g} s per system"
    )

    results: dict[str, dict[str, Any]] = {
        s.key: {"label": s.label, "kind": s.kind, "commands": [], "notes": ""} for s in args.systems
    }
    background: dict[str, float] = {}
    engine_commands: list[str] = []
    engine_version = ""
    for round_no in range(1, args.rounds + 1):
        for n, system in enumerate(args.systems, 1):
            entry = results[system.key]
            if "unavailable" in entry or "error" in entry:
                continue
            background[system.key] = llm_systems.background_load()
            where = f"round {round_no}/{args.rounds}, " if args.rounds > 1 else ""
            log(f"routing_bench: [{where}{n}/{len(args.systems)}] {system.label}: fresh engines ...")
            before = list(procs.running)
            try:
                engines = routing_systems.start_engines(procs, binary, system.key, args.engines, args.slots,
                                                        args.ctx_per_slot, args.cache_ram)  # fmt: skip
                engine_commands, engine_version = engines.commands, engines.version
                ctx = Context(procs, work, engines, args.slots, 0, peers, peers_reason)
                run = measure(ctx, system, workload, args)
                summary = routing_report.summarize(run, args.prompt_tokens)
                entry.setdefault("rounds", []).append({"run": run, "summary": summary})
                if summary.get("ttft_p50") is not None:
                    log(
                        f"routing_bench:   TTFT p50 {summary['ttft_p50']:,.0f} ms, p99 {summary['ttft_p99']:,.0f} ms, "
                        f"{summary['requests_per_s']:.2f} requests/s, {summary['cached_share'] * 100:.0f}% of prompt "
                        f"tokens cached, requests per engine {[e['requests'] for e in summary['engines']]}"
                    )
            except Unavailable as exc:
                entry["unavailable"] = str(exc)
                log(f"routing_bench:   not available: {exc}")
            except Exception as exc:  # one system failing does not stop the others
                entry["error"] = f"{type(exc).__name__}: {exc}"
                log(f"routing_bench:   FAILED: {entry['error']}")
            finally:
                for proc in [p for p in procs.running if p not in before]:
                    procs.stop(proc)
    for entry in results.values():
        _median_round(entry)

    run_info = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "command": "python bench/routing_bench.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "root": str(ROOT),
        "work": str(work),
        "config": {
            **{name: getattr(args, name) for name in SIZES},
            "think": list(args.think),
            "seed": args.seed,
            "rounds": args.rounds,
            "engines": args.engines,
            "slots": args.slots,
            "cache_ram": args.cache_ram,
            "ctx_per_slot": args.ctx_per_slot,
            "engine_cpu": ENGINE_CPU,
            "front_cpu": FRONT_CPU,
        },
        "workload": {
            "system_prompts": list(workload.system_prompts),
            "users": [asdict(u) for u in workload.users],
        },
        "engine_commands": engine_commands,
        "versions": _versions(peers, engine_version),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "background": background,
        "results": results,
    }
    text = routing_report.markdown(run_info)
    print(text)
    if not args.no_save:
        results_files.save("routing", started, text, columnar(run_info), args.out)
    return 0


def _median_round(entry: dict[str, Any]) -> None:
    """The round with the median TTFT p50 becomes the system's ``run`` and ``summary``; every round's p50 is kept.

    The report's tables then show one real run (its placements and cache
    outcomes add up), and the targets read the rounds' range.
    """
    rounds = entry.pop("rounds", [])
    if not rounds:
        return
    timed = [r for r in rounds if r["summary"].get("ttft_p50") is not None] or rounds
    timed.sort(key=lambda r: r["summary"].get("ttft_p50") or 0.0)
    middle = timed[(len(timed) - 1) // 2]
    run = middle["run"]
    entry.update(commands=run["commands"], notes=run["notes"], run=run, summary=dict(middle["summary"]))
    entry["summary"]["ttft_p50_rounds"] = [r["summary"].get("ttft_p50") for r in rounds]
    entry["summary"]["requests_per_s_rounds"] = [r["summary"].get("requests_per_s") for r in rounds]
    if len(rounds) > 1:
        entry["round_summaries"] = [r["summary"] for r in rounds]


def columnar(run_info: dict[str, Any]) -> dict[str, Any]:
    """The run for its JSON file: each system's records as rows under one header, times rounded to 0.1 ms.

    Several hundred records per system as objects would repeat every field name in every record.
    """
    out = {**run_info, "results": {}}
    for key, entry in run_info["results"].items():
        entry = dict(entry)
        run = entry.get("run")
        if run and run.get("records"):
            columns = list(run["records"][0])
            rows = [[_rounded(r[c]) for c in columns] for r in run["records"]]
            entry["run"] = {**run, "records": {"columns": columns, "rows": rows}}
        out["results"][key] = entry
    return out


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _versions(peers: Path | None, engine_version: str) -> dict[str, str]:
    """bench/llm_bench.py's list, less what this benchmark does not run (guidellm, the in-replica plugin)."""
    found = versions(peers, ROOT / ".venv-loadgen", engine_version)
    for key in ("guidellm", "llama-cpp-python (in-replica plugin)", "anyserve-engine-llamacpp"):
        found.pop(key, None)
    found["load generator"] = f"bench/routing_workload.py (httpx {_httpx_version()})"
    return found


def _httpx_version() -> str:
    import httpx

    return httpx.__version__


if __name__ == "__main__":
    sys.exit(main())
