"""anyserve against bare floors, on this machine, in one run: ``python bench/run.py [--quick]``.

Each system under test runs as separate processes pinned to CPU 0 (every
process of it: floor server, or router + agent + workers); the load
generator (``bench/loadgen.py``) runs pinned to CPU 1. Systems:

    grpc    bare grpc.aio KServe v2 echo            (floor for every gRPC figure)
    http    bare uvicorn + Starlette echo            (floor for HTTP)
    inproc  anyserve replica, direct gRPC, inproc transport
    unix    anyserve replica, direct gRPC, unix transport, 1 worker
    router  anyserve router (HTTP) -> agent -> 1 worker over unix

Workloads: W1 small unary echo, W2 1 MiB echo, W3 256-token stream, OBJ
objects inline vs by reference (plus bench/objects_bench.py's table when
that script exists). Results: a markdown table on stdout and in
``bench/results/<date>-<host>.md`` and ``latest.md``, JSON beside them.
Every process started is stopped at the end, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = HERE / "servers"
RESULTS = HERE / "results"
SERVER_CPU = 0
CLIENT_CPU = 1
MIB = 1024 * 1024
#: Limits raised for the 256 MiB inline object (frames, messages, router body).
BIG_LIMIT = 320 * MIB

SYSTEMS = ("grpc", "http", "inproc", "unix", "router")
WORKLOADS = ("W1", "W2", "W3", "OBJ")
LABELS = {
    "grpc": "bare grpc.aio",
    "http": "bare HTTP (uvicorn+Starlette)",
    "inproc": "anyserve direct, inproc",
    "unix": "anyserve direct, unix",
    "router": "anyserve via router",
}
PROTO = {"grpc": "grpc", "http": "http", "inproc": "grpc", "unix": "grpc", "router": "http"}
ANYSERVE = ("inproc", "unix", "router")
#: Systems that run the OBJ workload (they have an object store).
OBJ_SYSTEMS = ("unix", "router")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------


@dataclass
class Managed:
    """A process started in its own session, so its whole group (agent + workers) can be stopped."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output().splitlines():
                if text in line:
                    return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {text!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {text!r} within {timeout:g}s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def group(self) -> list[int]:
        """Live pids of this process's group (it leads its own session)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=8)
        # Whatever is left of the group (workers outliving their agent) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class Processes:
    """Everything this run started; ``stop_all`` is safe to call repeatedly and from atexit."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.running: list[Managed] = []

    def start(self, name: str, args: list[str], cpu: int, env: dict[str, str] | None = None) -> Managed:
        log_path = self.work / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVERS), str(HERE), os.environ.get("PYTHONPATH")]))
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *args],
                cwd=SERVERS,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        managed = Managed(name, proc, log_path)
        self.running.append(managed)
        return managed

    def stop(self, managed: Managed) -> None:
        managed.stop()
        if managed in self.running:
            self.running.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self.running)):
            managed.stop()
        self.running.clear()


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def endpoint_of(ready_line: str) -> str:
    """``... ready at HOST:PORT ...`` or ``... ready at http://HOST:PORT;`` -> ``HOST:PORT``."""
    word = ready_line.split(" ready at ", 1)[1].split()[0].rstrip(";,")
    return word.removeprefix("http://")


def role_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    if "anyserve.replica.worker_main" in argv:
        return "worker"
    if "router" in argv:
        return "router"
    if "start" in argv:
        return "agent"
    return "server"


def check_pinned(managed: Managed, cpu: int) -> list[dict[str, Any]]:
    pids = managed.group()
    pinned = [{"pid": pid, "role": role_of(pid), "cpus": sorted(os.sched_getaffinity(pid))} for pid in pids]
    wrong = [p for p in pinned if p["cpus"] != [cpu]]
    if wrong:
        raise RuntimeError(f"{managed.name}: processes not pinned to CPU {cpu}: {wrong}")
    return pinned


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


# -- systems ----------------------------------------------------------------------------


@dataclass
class Running:
    name: str
    target: str
    processes: list[Managed] = field(default_factory=list)
    pinned: list[dict[str, Any]] = field(default_factory=list)


def anyserve_config(work: Path, name: str, store: Path) -> Path:
    """Per-system configuration: big-object limits and the shared object store."""
    path = work / f"{name}.toml"
    transport = (
        f'[transport]\nname = "unix"\noptions = {{ max_frame_bytes = {BIG_LIMIT} }}\n\n' if name != "inproc" else ""
    )
    path.write_text(
        f'[objects]\nurl = "file://{store}"\nttl_seconds = 0\n\n{transport}'
        f"[router]\nmax_body_bytes = {BIG_LIMIT}\n\n[replica]\nmax_message_bytes = {BIG_LIMIT}\n"
    )
    return path


def wait_routable(url: str, timeout: float = 30.0) -> None:
    """Until the router answers an echo: the replica has registered and is routable."""
    sys.path.insert(0, str(HERE))
    from loadgen import small_request

    body = small_request().SerializeToString()
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            f"{url}/infer",
            data=body,
            headers={"Content-Type": "application/x-protobuf", "X-Capability-Type": "echo"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"router at {url} did not route an echo within {timeout:g}s")
        time.sleep(0.2)


def start_system(name: str, procs: Processes, store: Path) -> Running:
    py = sys.executable
    if name == "grpc":
        server = procs.start(name, [py, str(SERVERS / "grpc_floor.py"), "--port", "0"], SERVER_CPU)
        running = Running(name, endpoint_of(server.wait_for(" ready at ")), [server])
    elif name == "http":
        server = procs.start(name, [py, str(SERVERS / "http_floor.py"), "--port", "0"], SERVER_CPU)
        running = Running(name, endpoint_of(server.wait_for(" ready at ")), [server])
    elif name in ("inproc", "unix"):
        config = anyserve_config(procs.work, name, store)
        args = [py, "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0"]
        args += ["--transport", name, "--workers", "1", "--config", str(config)]
        replica = procs.start(name, args, SERVER_CPU)
        running = Running(name, endpoint_of(replica.wait_for(" ready at ")), [replica])
    elif name == "router":
        config = anyserve_config(procs.work, name, store)
        router = procs.start(
            "router", [py, "-m", "anyserve_cli", "router", "--port", "0", "--config", str(config)], SERVER_CPU
        )
        url = "http://" + endpoint_of(router.wait_for(" ready at "))
        args = [py, "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0"]
        args += ["--transport", "unix", "--workers", "1", "--config", str(config)]
        args += ["--api-server", url, "--replica-id", "bench"]
        replica = procs.start("router-replica", args, SERVER_CPU)
        replica.wait_for(" ready at ")
        wait_routable(url)
        running = Running(name, url.removeprefix("http://"), [router, replica])
    else:
        raise ValueError(name)
    time.sleep(0.5)  # let start-up work (imports, registration) settle before measuring
    for managed in running.processes:
        running.pinned += check_pinned(managed, SERVER_CPU)
    return running


def run_loadgen(
    procs: Processes, running: Running, workloads: list[str], args: argparse.Namespace, store: Path
) -> dict[str, Any]:
    out = procs.work / f"loadgen-{running.name}.json"
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--proto", PROTO[running.name], "--target", running.target]
    cmd += ["--workloads", ",".join(workloads), "--duration", str(args.duration), "--warmup", str(args.warmup)]
    cmd += ["--runs", str(args.runs), "--out", str(out), "--store", str(store)]
    roles: dict[str, int] = {}
    for p in running.pinned:
        role = p["role"] if p["role"] not in roles else f"{p['role']}{p['pid']}"
        roles[role] = p["pid"]
    cmd += ["--server-pids", ",".join(f"{r}:{pid}" for r, pid in roles.items())]
    if args.quick:
        cmd += ["--object-reps", "10", "--object-budget", "0.25"]
    if running.name in ANYSERVE:
        cmd.append("--sync-variant")
    if running.name == "router":
        # 256 MiB inline through the router takes seconds per call; bench/objects_bench.py covers it.
        cmd += ["--inline-max-mib", "64"]
    gen = procs.start(f"loadgen-{running.name}", cmd, CLIENT_CPU)
    timeout = 60 + 15 * len(workloads) * (args.warmup + args.runs * args.duration) * 3
    deadline = time.monotonic() + timeout
    while gen.proc.poll() is None:
        if time.monotonic() > deadline:
            procs.stop(gen)
            raise RuntimeError(f"load generator for {running.name} ran past {timeout:.0f}s:\n{gen.tail()}")
        time.sleep(0.1)
    procs.stop(gen)
    if gen.proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"load generator for {running.name} failed ({gen.proc.returncode}):\n{gen.tail()}")
    return json.loads(out.read_text())


def run_objects_bench(procs: Processes, quick: bool) -> dict[str, Any] | None:
    """bench/objects_bench.py, when it exists: its own processes, unpinned, its table embedded."""
    script = HERE / "objects_bench.py"
    if not script.exists():
        return None
    out = procs.work / "objects_bench.md"
    cmd = [sys.executable, str(script), "--output", str(out)]
    if quick:
        cmd += ["--sizes", "1,64", "--reps", "2,1"]
    log("==> bench/objects_bench.py (its own router + replica, not pinned)")
    started = time.monotonic()
    log_path = procs.work / "objects_bench.log"
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    managed = Managed("objects_bench", proc, log_path)
    procs.running.append(managed)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        log("    objects_bench.py ran past 300 s; stopped")
    procs.stop(managed)
    wall = time.monotonic() - started
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exit {proc.returncode}", "tail": managed.tail(), "wall_s": wall}
    return {"markdown": out.read_text(), "wall_s": wall}


# -- report -------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:
        return "—"
    if unit == "ms":
        return f"{value:.2f} ms"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


#: (row label, workload, cell, field, unit, higher_is_better)
METRICS = [
    ("W1 small echo, req/s @ c=1", "W1", "c1", "rate", "", True),
    ("W1 small echo, req/s @ c=64", "W1", "c64", "rate", "", True),
    ("W1 latency p50 @ c=1", "W1", "c1", "p50_ms", "ms", False),
    ("W1 latency p99 @ c=1", "W1", "c1", "p99_ms", "ms", False),
    ("W2 1 MiB echo, MiB/s @ c=8", "W2", "c8", "rate", "", True),
    ("W3 256-token stream, tokens/s @ c=16", "W3", "c16", "rate", "", True),
    ("W3 time to first token p50 @ c=1", "W3", "c1", "ttft_p50_ms", "ms", False),
    ("W1 sync (thread-pool) handler, req/s @ c=64 †", "W1", "c64_sync", "rate", "", True),
]


def value(results: dict[str, Any], system: str, workload: str, cell: str, key: str) -> float | None:
    try:
        return float(results[system][workload][cell][key])
    except (KeyError, TypeError, ValueError):
        return None


def cell_data(results: dict[str, Any], system: str, workload: str, cell: str) -> dict[str, Any]:
    try:
        return results[system][workload][cell]
    except (KeyError, TypeError):
        return {}


def cpu_per_op(results: dict[str, Any], system: str, workload: str, cell: str) -> float | None:
    """CPU µs (all processes of the system, user + sys) per operation in a cell."""
    data = cell_data(results, system, workload, cell)
    per, ops = data.get("server_cpu_s") or {}, data.get("ops_total") or 0
    return sum(per.values()) * 1e6 / ops if per and ops else None


def core_share(results: dict[str, Any], system: str, workload: str, cell: str) -> float | None:
    """The share of core 0 the system under test itself used in a cell (the rest: idle or someone else)."""
    data = cell_data(results, system, workload, cell)
    per, wall = data.get("server_cpu_s") or {}, data.get("wall_s") or 0
    return sum(per.values()) / wall if per and wall else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def main_table(results: dict[str, Any], systems: list[str]) -> list[str]:
    head = "| metric | " + " | ".join(LABELS[s] for s in systems) + " |"
    lines = [head, "|---|" + "---:|" * len(systems)]
    for label, workload, cell, key, unit, _ in METRICS:
        if not any(value(results, s, workload, cell, key) is not None for s in systems):
            continue
        row = [label]
        grpc_floor = value(results, "grpc", workload, cell, key)
        http_floor = value(results, "http", workload, cell, key)
        for system in systems:
            v = value(results, system, workload, cell, key)
            text = fmt(v, unit)
            data = cell_data(results, system, workload, cell)
            if data.get("client_cpu", 0) > 0.9:
                text += " ⚠"
            if system in ANYSERVE and v is not None:
                parts = []
                r = ratio(v, grpc_floor)
                if r is not None:
                    parts.append(f"{r:.2f}x grpc")
                if system == "router":
                    r = ratio(v, http_floor)
                    if r is not None:
                        parts.append(f"{r:.2f}x http")
                if parts:
                    text += " (" + ", ".join(parts) + ")"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The stated targets, each with its measured figure and pass/fail (None: not measured)."""
    w1 = lambda s: value(results, s, "W1", "c64", "rate")  # noqa: E731
    out = []

    def add(
        text: str, measured: float | None, limit: float, below: bool = False, shown: str = "", cpu: float | None = None
    ) -> None:
        ok = None if measured is None else (measured <= limit if below else measured >= limit)
        row = {"target": text, "measured": measured, "limit": limit, "ok": ok, "shown": shown, "cpu_estimate": cpu}
        out.append(row)

    def cpu(system: str, workload: str, cell: str) -> float | None:
        # floor's CPU per op / the system's: the throughput ratio both would reach with a whole core each
        return ratio(cpu_per_op(results, "grpc", workload, cell), cpu_per_op(results, system, workload, cell))

    for system, limit in (("unix", 0.75), ("inproc", 0.9)):
        add(
            f"replica direct over {system}, W1@64 ≥ {limit:g}x bare grpc.aio",
            ratio(w1(system), w1("grpc")),
            limit,
            cpu=cpu(system, "W1", "c64"),
        )
    add(
        "through the router, W1@64 ≥ 0.5x bare grpc.aio",
        ratio(w1("router"), w1("grpc")),
        0.5,
        cpu=cpu("router", "W1", "c64"),
    )
    tok = ratio(value(results, "router", "W3", "c16", "rate"), value(results, "grpc", "W3", "c16", "rate"))
    add("through the router, W3 tokens/s @16 ≥ 0.8x bare grpc.aio", tok, 0.8, cpu=cpu("router", "W3", "c16"))
    ttft = value(results, "router", "W3", "c1", "ttft_p50_ms")
    add("through the router, W3 TTFT p50 @ c=1 ≤ 2 ms", ttft, 2.0, below=True, shown="ms")
    for system in OBJ_SYSTEMS:
        one = value(results, system, "OBJ", "ref_1", "p50_ms")
        big = value(results, system, "OBJ", "ref_256", "p50_ms")
        add(f"object by reference ({LABELS[system]}): 256 MiB ≤ 2x 1 MiB", ratio(big, one), 2.0, below=True)
    return out


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | | CPU-cost estimate ‡ |", "|---|---:|:---:|---:|"]
    for row in rows:
        m = row["measured"]
        shown = "—" if m is None else (f"{m:.2f} ms" if row["shown"] == "ms" else f"{m:.2f}x")
        mark = "—" if row["ok"] is None else ("✅" if row["ok"] else "❌")
        estimate = row.get("cpu_estimate")
        lines.append(f"| {row['target']} | {shown} | {mark} | {'' if estimate is None else f'{estimate:.2f}x'} |")
    return lines


def objects_table(results: dict[str, Any]) -> list[str]:
    systems = [s for s in OBJ_SYSTEMS if isinstance(results.get(s, {}).get("OBJ"), dict)]
    if not systems:
        return []
    sizes = sorted(
        {int(k.split("_")[1]) for s in systems for k in results[s]["OBJ"] if k.startswith(("ref_", "inline_"))}
    )
    head = ["size"]
    for s in systems:
        head += [f"{LABELS[s]}: inline", f"{LABELS[s]}: by ref"]
    head.append("client create (write to store)")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for mib in sizes:
        row = [f"{mib} MiB"]
        create = None
        for s in systems:
            obj = results[s]["OBJ"]
            inline = obj.get(f"inline_{mib}", {}).get("p50_ms")
            ref = obj.get(f"ref_{mib}", {}).get("p50_ms")
            create = create or obj.get(f"ref_{mib}", {}).get("create_ms")
            row += [fmt(inline, "ms"), fmt(ref, "ms")]
        row.append(fmt(create, "ms"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


#: (column label, workload, cell, unit of one op)
CPU_CELLS = [
    ("W1 @ c=64, µs per request", "W1", "c64"),
    ("W1 @ c=1, µs per request", "W1", "c1"),
    ("W2 @ c=8, µs per MiB echoed", "W2", "c8"),
    ("W3 @ c=16, µs per token", "W3", "c16"),
]


def cpu_table(results: dict[str, Any], systems: list[str]) -> list[str]:
    """CPU time (user + sys) each process of a system spent per operation, from /proc over the window."""
    lines = ["| system | " + " | ".join(c[0] for c in CPU_CELLS) + " |", "|---|" + "---:|" * len(CPU_CELLS)]
    for system in systems:
        row = [LABELS[system]]
        for _, workload, cell in CPU_CELLS:
            data = cell_data(results, system, workload, cell)
            per = data.get("server_cpu_s") or {}
            ops = data.get("ops_total") or 0
            if not per or not ops:
                row.append("—")
                continue
            parts = {role: seconds * 1e6 / ops for role, seconds in per.items()}
            total = sum(parts.values())
            if len(parts) == 1:
                text = f"{total:.0f}"
            else:
                text = " + ".join(f"{role} {us:.0f}" for role, us in parts.items()) + f" = **{total:.0f}**"
            share = core_share(results, system, workload, cell)
            if share is not None and share < 0.9 and cell != "c1":  # at c=1 the core is idle between calls
                text += f" ({share:.0%} of core 0)"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "anyserve-core",
        "anyserve-router",
        "grpcio",
        "protobuf",
        "uvicorn",
        "starlette",
        "httptools",
        "uvloop",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    systems = [s for s in SYSTEMS if s in results]
    env = report["environment"]
    lines = [
        f"# anyserve vs bare floors — {report['started']} on {env['host']}",
        "",
        f"`python bench/run.py {' '.join(report['argv'])}`".replace(" `", "`"),
        "",
        "Each system ran alone, all its processes pinned to CPU 0; the load generator pinned to CPU 1. "
        f"Figures are the median of {report['settings']['runs']} run(s) of {report['settings']['duration']:g} s "
        f"after {report['settings']['warmup']:g} s of warm-up. Ratios are anyserve ÷ floor: "
        "**x grpc** against the bare grpc.aio floor (same gRPC load generator for direct replicas; "
        "for the router the client speaks HTTP, the gRPC floor is the bar the targets set), "
        "**x http** against the bare uvicorn/Starlette floor (same HTTP load generator). "
        "Above 1 is better for rates, below 1 is better for latencies. "
        "⚠ = the load generator used > 90% of its core, so that figure is a lower bound set by the client.",
        "",
        "## Results",
        "",
        *main_table(results, systems),
        "",
        "† supplementary: the same echo written as a plain `def` handler (runs in the worker's thread pool); "
        "the main rows use `async def` handlers, like the floors.",
        "",
        "## Targets",
        "",
        *targets_table(report["targets"]),
        "",
        "‡ the floor's CPU time per operation divided by the system's (table below): the throughput ratio the "
        "two would reach if each had the whole core. It does not move with background load or with a client "
        "that cannot keep the server busy, so it is the steadier figure when the two disagree; the targets "
        "are judged on the measured column.",
        "",
        "## Where the CPU goes",
        "",
        "CPU time (user + system, from `/proc/<pid>/stat`) each process of the system under test used per "
        "operation during the measured runs. On one shared core this, not wall time, says which hop costs what. "
        "*(N% of core 0)*: the system itself used only that share of its core in a throughput cell "
        "(the rest was idle or taken by other processes), so its measured rate is low by about that much.",
        "",
        *cpu_table(results, systems),
        "",
    ]
    obj = objects_table(results)
    if obj:
        lines += [
            "## Objects: inline vs by reference (median ms per call)",
            "",
            "Inline: the object travels in the request (`raw_input_contents`; protobuf body through the router); "
            "the handler answers its length. By reference: the client first writes the object into the shared "
            "`file://` store (*client create*, not part of the call) and sends only its `fs://` ObjRef; the "
            "handler `stat`s it. Direct = gRPC to the unix replica; router = HTTP protobuf to `POST /infer`. "
            "The target compares the by-reference call at 256 MiB with the one at 1 MiB.",
            "",
            *obj,
            "",
        ]
    ob = report.get("objects_bench")
    if ob:
        lines += ["## bench/objects_bench.py (its own processes, not pinned)", ""]
        if "markdown" in ob:
            body = ob["markdown"].splitlines()
            if body and body[0].startswith("# "):
                body = body[1:]
            lines += [*(("#" + line) if line.startswith("## ") else line for line in body), ""]
        else:
            lines += [f"failed: {ob.get('error')}", "", "```", ob.get("tail", ""), "```", ""]
    lines += ["## Environment", ""]
    lines += [
        f"* host `{env['host']}`, {env['cpus']} CPUs ({env['cpu_model']}), Linux {env['kernel']}, "
        f"Python {env['python']}",
        "* " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "* background load before each system (both cores, other people's processes): "
        + ", ".join(f"{s} {v:.0%}" for s, v in env["background"].items()),
        f"* whole run {report['wall_s']:.0f} s",
    ]
    for system in systems:
        pinned = report["pinned"].get(system, [])
        if pinned:
            lines.append(
                f"* {system}: {len(pinned)} process(es) on CPU {SERVER_CPU} "
                f"(pids {', '.join(str(p['pid']) for p in pinned)})"
            )
    cpu_notes = []
    for system in systems:
        for workload in ("W1", "W2", "W3"):
            for cell, data in (results.get(system, {}).get(workload) or {}).items():
                if isinstance(data, dict) and "client_cpu" in data:
                    cpu_notes.append(
                        f"{system}/{workload}/{cell} {data['client_cpu']:.0%}/{data.get('server_core', 0):.0%}"
                    )
    if cpu_notes:
        lines += [
            "* load generator CPU / core 0 busy, per cell: " + "; ".join(cpu_notes),
        ]
    errors = report.get("errors") or {}
    if errors:
        lines += ["", "## Errors", ""] + [f"* {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


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
            workloads = [w for w in args.workloads if w != "OBJ" or system in OBJ_SYSTEMS]
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
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = f"{started.strftime('%Y-%m-%d-%H%M')}-{socket.gethostname()}"
        for name in (stamp, "latest"):
            (RESULTS / f"{name}.md").write_text(text)
            (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
        log(f"wrote {RESULTS / (stamp + '.md')} and latest.md (JSON beside them)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
