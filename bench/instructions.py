"""Instructions per request of the router, the agent and the worker, counted by valgrind's callgrind.

Throughput on a shared 2-core machine moves by 10% from one run to the
next (the host's load, not ours); a change that costs 3% cannot be seen in
it. The number of machine instructions each process executes per request
does not move: it is what a change costs, whatever the machine is doing.
It leaves out time in the kernel (system calls, which the same request
makes as many of either way) and cache effects, so throughput is still
reported beside it.

How: the three processes run under ``valgrind --tool=callgrind`` with
counting off; after 500 warm-up requests it is switched on in all three
(``callgrind_control``), ``--requests`` W1 requests are sent over 64
connections (small protobuf echo, ``POST /infer``), and counting goes on
for as long again with no requests, so the background work that ticks by
the clock (heartbeats, liveness probes, sweeps), which under valgrind runs
as often per second as ever while requests go 50 times slower, is measured
and subtracted.

One thing cannot be subtracted that way: a call the router has out for
two of its deadline ticks gets a task watching its client
(``anyserve_router/deadlines.py``). At full speed an echo is answered long
before; under valgrind every request lives that long. The router here runs
with its tick at 5 s (``bench/site_hooks/sitecustomize.py``, set only by
this module), so what is counted is what a request costs at full speed.

    .venv/bin/python bench/instructions.py [--requests 2000]   # this tree, about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadgen_clients import HttpClient
from loadgen_workloads import small_request
from processes import HERE, SERVER_CPU, Processes, log
from systems import anyserve_config, endpoint_of, wait_routable

ROLES = ("router", "agent", "worker")
CONNECTIONS = 64
WARMUP = 500
SITE = HERE / "site_hooks"


def available() -> bool:
    return all(shutil.which(tool) for tool in ("valgrind", "callgrind_control"))


async def _drive(target: str, requests: int, headers: dict[str, str]) -> None:
    """``requests`` W1 echoes over :data:`CONNECTIONS` connections, each checked."""
    client = HttpClient(target, headers)
    conns = await client.pool(CONNECTIONS)
    payload = small_request().SerializeToString()
    left = requests

    async def loop(call) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    try:
        await asyncio.gather(*(loop(client.unary(conn, payload, "echo")) for conn in conns))
    finally:
        await client.close()


def _callgrind_pids() -> list[int]:
    listing = subprocess.run(["callgrind_control"], capture_output=True, text=True).stdout
    return [int(pid) for pid in re.findall(r"^PID (\d+):", listing, re.M)]


def _control(pids: list[int], *args: str) -> None:
    for pid in pids:
        subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, timeout=60)


def _role(command: str) -> str | None:
    if "anyserve_cli router" in command:
        return "router"
    if "anyserve_cli start" in command:
        return "agent"
    if "worker_main" in command:
        return "worker"
    return None


def _read(work: Path, requests: int) -> dict[str, float]:
    """Instructions per request of each role: the loaded window's count less the idle one's."""
    loaded: dict[str, int] = {}
    idle: dict[str, int] = {}
    for path in work.glob("callgrind.*"):
        text = path.read_text(errors="replace")
        command = re.search(r"^cmd: (.*)$", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        role = _role(command.group(1)) if command else None
        if role is None or total is None:
            continue
        trigger = re.search(r"^desc: Trigger: .*?(loaded|idle)$", text, re.M)
        if trigger is None:
            continue  # written at exit: counting was off by then
        into = loaded if trigger.group(1) == "loaded" else idle
        into[role] = into.get(role, 0) + int(total.group(1))
    return {role: (loaded.get(role, 0) - idle.get(role, 0)) / requests for role in ROLES}


def count(
    procs: Processes,
    name: str,
    python: Path,
    env: dict[str, str],
    headers: dict[str, str],
    requests: int,
    store: Path,
) -> dict[str, float]:
    """Start router + replica under callgrind with ``python``; instructions per request by role."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)  # a file name, and no "%" that valgrind's own would expand
    work = Path(tempfile.mkdtemp(prefix=f"instructions-{slug}-", dir=procs.work))
    config = anyserve_config(work, "instructions", store)
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
                f"--callgrind-out-file={work}/callgrind.%p"]  # fmt: skip
    env = {**env, "ANYSERVE_BENCH_DEADLINE_TICK": "5"}
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), saved]))  # Processes.start passes it on
    started = []
    try:
        router = procs.start(
            f"{name}-router-cg", [*valgrind, str(python), "-m", "anyserve_cli", "router", "--port", "0",
                                  "--config", str(config)], SERVER_CPU, env=env,
        )  # fmt: skip
        started.append(router)
        url = "http://" + endpoint_of(router.wait_for(" ready at ", timeout=300))
        replica = procs.start(
            f"{name}-replica-cg",
            [*valgrind, str(python), "-m", "anyserve_cli", "start", "--app", "bench_app:app", "--port", "0",
             "--transport", "unix", "--workers", "1", "--config", str(config), "--api-server", url,
             "--replica-id", "bench"], SERVER_CPU, env=env,
        )  # fmt: skip
        started.append(replica)
        replica.wait_for(" ready at ", timeout=300)
        wait_routable(url, timeout=120, headers=headers)
        target = url.split("://", 1)[1]
        asyncio.run(_drive(target, WARMUP, headers))
        pids = _callgrind_pids()
        _control(pids, "--instr=on")
        began = time.monotonic()
        asyncio.run(_drive(target, requests, headers))
        took = time.monotonic() - began
        _control(pids, "--dump=loaded")
        time.sleep(took)  # the same time with no requests: the clock-driven work, to subtract
        _control(pids, "--dump=idle")
        _control(pids, "--instr=off")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        for managed in started:
            procs.stop(managed)
    return _read(work, requests)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests counted (default 2000)")
    args = p.parse_args(argv)
    if not available():
        log("instructions: valgrind is not installed (apt-get install valgrind)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="instructions-"))
    procs = Processes(work)
    store = work / "objects"
    store.mkdir()
    try:
        counts = count(procs, "now", Path(sys.executable), {"ANYSERVE_STATE_DIR": str(work / "state")}, {},
                       args.requests, store)  # fmt: skip
    finally:
        procs.stop_all()
    print(" / ".join(f"{role} {counts[role] / 1000:,.1f}k" for role in ROLES), "instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
