"""anyserve against bare floors, on this machine, in one run: ``python bench/run.py [--quick]``.

Each system under test runs as separate processes pinned to CPU 0 (every
process of it: floor server, or router + agent + workers); the load
generator (``bench/loadgen.py``) runs pinned to CPU 1. Systems:

    grpc    bare grpc.aio KServe v2 echo            (floor for every gRPC figure)
    http    bare uvicorn + Starlette echo            (floor for HTTP)
    inproc  anyserve replica, direct gRPC, inproc transport
    unix    anyserve replica, direct gRPC, unix transport, 1 worker
    router  anyserve router (HTTP) -> agent -> 1 worker over unix
    http-json, router-json
            the same two HTTP systems sent KServe v2 JSON bodies (W2 also as the
            binary tensor extension) instead of protobuf; ratios against http-json

Workloads: W1 small unary echo, W2 1 MiB echo, W3 256-token stream, OBJ
objects inline vs by reference (plus bench/objects_bench.py's table when
that script exists), CHAT the no-compute chat engine through the router's
OpenAI API vs ``/infer/stream`` (router only). Results: a markdown table on
stdout and in ``bench/results/<date>-<host>.md`` and ``latest.md``, JSON
beside them (``--out DIR``: there instead).
Every process started is stopped at the end, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from processes import CLIENT_CPU, HERE, SERVER_CPU, Processes, background_load, log
from report import cpu_model, render, versions
from report_targets import targets
from systems import LABELS, SYSTEMS, WORKLOAD_SYSTEMS, run_loadgen, run_objects_bench, start_system

RESULTS = HERE / "results"
WORKLOADS = ("W1", "W2", "W3", "OBJ", "CHAT")


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run per cell (~1-2 min)")
    parser.add_argument("--only", default="", help=f"workloads, comma-separated: {','.join(WORKLOADS)}")
    parser.add_argument("--systems", default="", help=f"systems, comma-separated: {','.join(SYSTEMS)}")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    parser.add_argument("--runs", type=int, default=None, help="measured runs per cell (median reported)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per cell")
    parser.add_argument("--no-objects-bench", action="store_true", help="skip bench/objects_bench.py")
    parser.add_argument("--no-save", action="store_true", help="print only; write nothing to bench/results")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="write the report (<date>-<time>-<host>.md, latest.md, JSON beside them) here instead of bench/results",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 2.5)
    args.runs = args.runs or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.workloads = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    args.systems = [s.strip().lower() for s in args.systems.split(",") if s.strip()] or list(SYSTEMS)
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    for s in args.systems:
        if s not in SYSTEMS:
            parser.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2 or not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        log(f"need CPUs {SERVER_CPU} and {CLIENT_CPU} available (have {sorted(os.sched_getaffinity(0))})")
        return 2
    # This process only waits; keep it off the server's core.
    os.sched_setaffinity(0, {CLIENT_CPU})
    started = dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="anyserve-bench-"))
    store = work / "objects"
    store.mkdir()
    procs = Processes(work)
    atexit.register(procs.stop_all)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    results: dict[str, Any] = {}
    pinned: dict[str, Any] = {}
    background: dict[str, float] = {}
    errors: dict[str, str] = {}
    objects_bench = None
    t0 = time.monotonic()
    interrupted = False
    try:
        for system in args.systems:
            workloads = [w for w in args.workloads if system in WORKLOAD_SYSTEMS.get(w, (system,))]
            if not workloads:
                continue
            background[system] = background_load(0.5)
            log(f"==> {system}: {LABELS[system]} (background load {background[system]:.0%})")
            ts = time.monotonic()
            try:
                running = start_system(system, procs, store)
                pinned[system] = running.pinned
                results[system] = run_loadgen(procs, running, workloads, args, store)
            except RuntimeError as exc:
                errors[system] = str(exc).splitlines()[0]
                log(f"    FAILED: {exc}")
            finally:
                procs.stop_all()
            for w in workloads:
                if isinstance(results.get(system, {}).get(w), dict) and "error" in results[system][w]:
                    errors[f"{system}/{w}"] = results[system][w]["error"]
                    log(f"    {w} failed: {results[system][w]['error']}")
            log(f"    {time.monotonic() - ts:.0f}s")
        if "OBJ" in args.workloads and not args.no_objects_bench:
            objects_bench = run_objects_bench(procs, args.quick)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process this run started")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "argv": argv,
        "settings": {"duration": args.duration, "runs": args.runs, "warmup": args.warmup, "quick": args.quick},
        "environment": {
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "versions": versions(),
            "background": background,
        },
        "pinned": pinned,
        "results": results,
        "errors": errors,
        "objects_bench": objects_bench,
        "wall_s": time.monotonic() - t0,
    }
    report["targets"] = targets(results)
    text = render(report)
    print(text)
    if interrupted:
        return 130
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = f"{started.strftime('%Y-%m-%d-%H%M')}-{socket.gethostname()}"
        for name in (stamp, "latest"):
            (args.out / f"{name}.md").write_text(text)
            (args.out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
        log(f"wrote {args.out / (stamp + '.md')} and latest.md (JSON beside them)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
