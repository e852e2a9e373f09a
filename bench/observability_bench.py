"""What metrics and tracing cost the router path: W1@64 and W3 tokens/s with them off and on, in one run.

    .venv/bin/python bench/observability_bench.py                  # ~6 min
    .venv/bin/python bench/observability_bench.py --rounds 6 --instructions 0   # a quick look

The router set-up of ``bench/run.py``'s ``router`` system (router -> agent ->
1 worker over unix, every process pinned to CPU 0, the load on CPU 1), for:

* off: ``router.metrics = false``, ``replica.metrics_port = -1``, tracing off;
* metrics: the defaults (the router counts every request, token and
  decision; the agent serves ``/metrics`` and its worker writes its figures);
* metrics + tracing 1%: ``[tracing] enabled`` with ``sample_ratio = 0.01``,
  spans batched to an OTLP/HTTP receiver (``bench/servers/otlp_sink.py``,
  on the load's CPU), the setting docs/tracing.md recommends under load;
* metrics + tracing 100%: every request traced, for scale.

All systems run side by side and the load visits them in turns
(bench/interleaved.py): W1 (small protobuf echo, 64 connections) and W3
(a 256-token stream over SSE, 16 connections), each a median over the
rounds of each system's ratio to *off* in the same round. Then, with
valgrind installed, W1 instructions per request (bench/instructions.py).
Targets: *metrics + tracing 1%* within 5% of *off* on W1 and 3% on W3.
Tracing's OTLP exporter is an extra: ``pip install "anyserve-core[otlp]"``.
Results go to bench/results/observability-<date>-<host>.md and
observability-latest.md (+ .json).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import instructions
import interleaved
import results_files
from hardening_bench import start_system
from processes import CLIENT_CPU, HERE, SERVER_CPU, Processes, background_load, free_port, log

OFF = {"ANYSERVE_ROUTER_METRICS": "false", "ANYSERVE_METRICS_PORT": "-1"}
#: (W1 target, W3 target): the least share of *off*'s rate the system with metrics and tracing keeps.
TARGETS = {"W1": 0.95, "W3": 0.97}
TRACED = "metrics + tracing 1%"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=20, help="rounds of turns per workload (default 20)")
    p.add_argument("--slot", type=float, default=1.0, help="seconds of each system's turn (default 1)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per system (default 2)")
    p.add_argument("--out", type=Path, help="write the report here instead of bench/results")
    p.add_argument(
        "--instructions", type=int, default=2000, metavar="N",
        help="also count W1 instructions per request under callgrind over N requests (default 2000; 0: skip)",
    )  # fmt: skip
    return p.parse_args(argv)


def otlp_installed() -> bool:
    done = subprocess.run([sys.executable, "-c", "import opentelemetry.exporter.otlp.proto.http"], capture_output=True)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not otlp_installed():
        log('observability_bench: tracing needs the OTLP exporter: pip install "anyserve-core[otlp]"')
        return 2
    started = dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="observability-bench-"))
    procs = Processes(work)
    atexit.register(procs.stop_all)
    store = work / "objects"
    store.mkdir()
    sink_port = free_port()
    procs.start("otlp-sink", [sys.executable, str(HERE / "servers" / "otlp_sink.py"), str(sink_port)], CLIENT_CPU)
    tracing = {
        "ANYSERVE_TRACING": "true",
        "ANYSERVE_TRACING_EXPORTER": "otlp",
        "ANYSERVE_TRACING_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
    }
    state = {"ANYSERVE_STATE_DIR": str(work / "state")}
    python = Path(sys.executable)
    systems: list[tuple[str, dict[str, str]]] = [
        ("off", {**state, **OFF}),
        ("metrics", state),
        (TRACED, {**state, **tracing, "ANYSERVE_TRACING_SAMPLE_RATIO": "0.01"}),
        ("metrics + tracing 100%", {**state, **tracing, "ANYSERVE_TRACING_SAMPLE_RATIO": "1"}),
    ]
    background = background_load()
    results: dict[str, list[interleaved.Target]] = {}
    counts: dict[str, dict[str, float]] = {}
    try:
        for workload in ("W1", "W3"):
            log(f"observability_bench: {workload}: starting {len(systems)} systems side by side ...")
            targets = [start_system(procs, f"{name} {workload}", python, env, store) for name, env in systems]
            for target, (name, _) in zip(targets, systems, strict=True):
                target.name = name
            log(f"observability_bench: {workload}: {args.rounds} rounds of {args.slot:g} s turns per system ...")
            interleaved.measure(targets, rounds=args.rounds, slot=args.slot, warmup=args.warmup, workload=workload)
            results[workload] = targets
            for target in targets:  # the next workload starts afresh: nothing learned or buffered carries over
                for pid in target.pids.values():
                    subprocess.run(["kill", str(pid)], capture_output=True)
        if args.instructions and instructions.available():
            for name, env in systems[:3]:
                log(f"observability_bench: instructions per request: {name} ...")
                counts[name] = instructions.count(procs, name, python, env, {}, args.instructions, store)
        elif args.instructions:
            log("observability_bench: valgrind is not installed; no instruction counts (apt-get install valgrind)")
    finally:
        procs.stop_all()
    text = report(args, started, results, background, counts)
    print(text)
    data = {
        workload: {t.name: {"rates": t.rates, "cpu_us": t.cpu_per_request()} for t in targets}
        for workload, targets in results.items()
    }
    data["instructions"] = counts  # type: ignore[assignment]
    results_files.save("observability", started, text, data, args.out)
    return 0


def report(
    args: argparse.Namespace,
    started: dt.datetime,
    results: dict[str, list[interleaved.Target]],
    background: float,
    counts: dict[str, dict[str, float]],
) -> str:
    commit = results_files.tree_label()
    lines = [
        f"# What metrics and tracing cost the router path — {started:%Y-%m-%d %H:%M} on {platform.node()}",
        "",
        f"`python bench/observability_bench.py` at {commit}. Router -> agent -> 1 worker over unix "
        f"for each system, all on CPU {SERVER_CPU}; the load from CPU {CLIENT_CPU}: W1, a small protobuf echo "
        f"over HTTP/1.1 on {interleaved.CONNECTIONS} connections, and W3, a 256-token stream over SSE on "
        f"{interleaved.STREAMS}. Every system runs throughout; the load goes to one at a time in turns of "
        f"{args.slot:g} s, {args.rounds} rounds, the order reversed every other round (bench/interleaved.py). "
        f"Spans go to an OTLP/HTTP receiver that keeps nothing (bench/servers/otlp_sink.py, on CPU {CLIENT_CPU}). "
        f"Background load before the start: {background:.0%} of both cores.",
    ]
    ratios: dict[tuple[str, str], float] = {}
    for workload, targets in results.items():
        unit = "tokens/s" if workload == "W3" else "requests/s"
        per = "token" if workload == "W3" else "request"
        base = targets[0]
        lines += [
            "",
            f"## {workload}",
            "",
            f"| system | {unit} (median turn) | vs off (median of the rounds' ratios) | middle half of those ratios "
            f"| CPU µs per {per}: router / agent / worker |",
            "|---|---:|---:|---|---|",
        ]
        for target in targets:
            ratio, low, high = interleaved.paired_ratio(target, base)
            ratios[(workload, target.name)] = ratio
            cpu = target.cpu_per_request()
            shown = " / ".join(f"{cpu.get(role, 0):.1f}" for role in instructions.ROLES) if cpu else "—"
            lines.append(
                f"| {target.name} | {statistics.median(target.rates):,.0f} | {ratio:.3f}x | {low:.3f}-{high:.3f} "
                f"| {shown} |"
            )
    if counts:
        lines += ["", "## W1 instructions per request (callgrind)", ""]
        lines += ["| system | router | agent | worker | all | vs off |", "|---|---:|---:|---:|---:|---:|"]
        off = sum(counts["off"].values())
        for name, by_role in counts.items():
            total = sum(by_role.values())
            cells = " | ".join(f"{by_role.get(role, 0) / 1000:,.0f}k" for role in instructions.ROLES)
            lines.append(f"| {name} | {cells} | {total / 1000:,.0f}k | {off / total:.3f}x |")
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---:|:---:|"]
    for workload, least in TARGETS.items():
        if (workload, TRACED) in ratios:
            ratio = ratios[(workload, TRACED)]
            mark = "✅" if ratio >= least else "❌"
            what = f"{workload} with metrics and tracing (1% sampled) ≥ {least:.2f}x off"
            lines.append(f"| {what} | {ratio:.3f}x | {mark} |")
    if TRACED in counts:
        ratio = sum(counts["off"].values()) / sum(counts[TRACED].values())
        mark = "✅" if ratio >= TARGETS["W1"] else "❌"
        lines.append(f"| the same in W1 instructions per request | {ratio:.3f}x | {mark} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
