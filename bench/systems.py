"""The systems under test: starting each (floor server, or router + agent + worker), pinned, and driving it.

Starts each system's processes, runs the load generator (``bench/loadgen.py``) against it, and runs
``bench/objects_bench.py``. Used by ``bench/run.py`` (a script; this module is imported from its directory).
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processes import CLIENT_CPU, HERE, ROOT, SERVER_CPU, SERVERS, Managed, Processes, check_pinned, log

MIB = 1024 * 1024
#: Limits raised for the 256 MiB inline object (frames, messages, router body).
BIG_LIMIT = 320 * MIB

SYSTEMS = ("grpc", "http", "inproc", "unix", "router", "http-json", "router-json")
LABELS = {
    "grpc": "bare grpc.aio",
    "http": "bare HTTP (uvicorn+Starlette)",
    "inproc": "anyserve direct, inproc",
    "unix": "anyserve direct, unix",
    "router": "anyserve via router",
    "http-json": "bare HTTP, JSON",
    "router-json": "anyserve via router, JSON",
}
PROTO = {
    "grpc": "grpc",
    "http": "http",
    "inproc": "grpc",
    "unix": "grpc",
    "router": "http",
    "http-json": "http",
    "router-json": "http",
}
#: Systems whose load generator sends KServe v2 JSON (W2 also as the binary extension) instead of protobuf:
#: the same server processes as the system named before the dash, started afresh.
JSON_SYSTEMS = ("http-json", "router-json")
#: The HTTP floor each HTTP system's ratios are taken against: the one doing the same body form.
HTTP_FLOOR = {"router": "http", "router-json": "http-json"}
ANYSERVE = ("inproc", "unix", "router", "router-json")
#: Systems that run the OBJ workload (they have an object store).
OBJ_SYSTEMS = ("unix", "router")
#: Systems that run the CHAT workload (the router's OpenAI API and ``/infer/stream`` in front of the same handler).
CHAT_SYSTEMS = ("router",)
#: Workloads only some systems run; the others run on every system.
WORKLOAD_SYSTEMS = {"OBJ": OBJ_SYSTEMS, "CHAT": CHAT_SYSTEMS}


def endpoint_of(ready_line: str) -> str:
    """``... ready at HOST:PORT ...`` or ``... ready at http://HOST:PORT;`` -> ``HOST:PORT``."""
    word = ready_line.split(" ready at ", 1)[1].split()[0].rstrip(";,")
    return word.removeprefix("http://")


@dataclass
class Running:
    name: str
    target: str
    processes: list[Managed] = field(default_factory=list)
    pinned: list[dict[str, Any]] = field(default_factory=list)


def anyserve_config(work: Path, name: str, store: Path) -> Path:
    """Per-system configuration: big-object limits and the shared object store.

    OBJ sends objects of up to 256 MiB inline as UINT8 tensors, past the
    default bound on a tensor's elements (64 Mi): that bound is raised with
    the byte limits.
    """
    path = work / f"{name}.toml"
    transport = (
        f'[transport]\nname = "unix"\noptions = {{ max_frame_bytes = {BIG_LIMIT} }}\n\n' if name != "inproc" else ""
    )
    path.write_text(
        f'[objects]\nurl = "file://{store}"\nttl_seconds = 0\n\n{transport}'
        f'[link]\nname = "tcp"\noptions = {{ max_frame_bytes = {BIG_LIMIT} }}\n\n'
        f"[router]\nmax_body_bytes = {BIG_LIMIT}\n\n"
        f"[replica]\nmax_message_bytes = {BIG_LIMIT}\nmax_tensor_elements = {BIG_LIMIT}\n"
    )
    return path


def wait_routable(
    url: str, timeout: float = 30.0, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> None:
    """Until the router answers an echo: the replica has registered and is routable.

    ``headers`` go with the echo (an API key); ``context`` trusts an HTTPS router's CA.
    """
    sys.path.insert(0, str(HERE))
    from loadgen_workloads import small_request

    body = small_request().SerializeToString()
    sent = {"Content-Type": "application/x-protobuf", "X-Capability-Type": "echo", **(headers or {})}
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"{url}/infer", data=body, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"router at {url} did not route an echo within {timeout:g}s")
        time.sleep(0.2)


def start_system(system: str, procs: Processes, store: Path) -> Running:
    """``system``'s processes, started, routable and checked for pinning (a ``-json`` system: its server's)."""
    py = sys.executable
    name = system.removesuffix("-json")
    if name == "grpc":
        server = procs.start(system, [py, str(SERVERS / "grpc_floor.py"), "--port", "0"], SERVER_CPU)
        running = Running(system, endpoint_of(server.wait_for(" ready at ")), [server])
    elif name == "http":
        server = procs.start(system, [py, str(SERVERS / "http_floor.py"), "--port", "0"], SERVER_CPU)
        running = Running(system, endpoint_of(server.wait_for(" ready at ")), [server])
    elif name in ("inproc", "unix"):
        config = anyserve_config(procs.work, name, store)
        args = [py, "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0"]
        args += ["--transport", name, "--workers", "1", "--config", str(config)]
        replica = procs.start(name, args, SERVER_CPU)
        running = Running(system, endpoint_of(replica.wait_for(" ready at ")), [replica])
    elif name == "router":
        config = anyserve_config(procs.work, name, store)
        router = procs.start(
            system, [py, "-m", "anyserve_cli", "router", "--port", "0", "--config", str(config)], SERVER_CPU
        )
        url = "http://" + endpoint_of(router.wait_for(" ready at "))
        args = [py, "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0"]
        args += ["--transport", "unix", "--workers", "1", "--config", str(config)]
        args += ["--api-server", url, "--replica-id", "bench"]
        replica = procs.start(f"{system}-replica", args, SERVER_CPU)
        replica.wait_for(" ready at ")
        wait_routable(url)
        running = Running(system, url.removeprefix("http://"), [router, replica])
    else:
        raise ValueError(system)
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
    if running.name in JSON_SYSTEMS:
        cmd += ["--body", "json"]
    roles: dict[str, int] = {}
    for p in running.pinned:
        role = p["role"] if p["role"] not in roles else f"{p['role']}{p['pid']}"
        roles[role] = p["pid"]
    cmd += ["--server-pids", ",".join(f"{r}:{pid}" for r, pid in roles.items())]
    if args.quick:
        cmd += ["--object-reps", "10", "--object-budget", "0.25"]
    if running.name in ANYSERVE and running.name not in JSON_SYSTEMS:
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
