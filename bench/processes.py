"""The benchmarks' processes: started pinned in their own sessions, checked for pinning, stopped as a group.

Used by ``bench/run.py`` and ``bench/llm_bench.py`` (scripts; this module is imported from their directory).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = HERE / "servers"
SERVER_CPU = 0
CLIENT_CPU = 1


def start_run(prefix: str, cpu: int | str) -> tuple[Path, Processes]:
    """A benchmark run's work folder and process table, this process pinned to ``cpu``.

    Everything started is stopped at exit, and on SIGTERM or SIGHUP too
    (a run killed from outside leaves no engine or router behind).
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    procs = Processes(work, cwd=work)
    atexit.register(procs.stop_all)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    os.sched_setaffinity(0, {int(cpu)})
    return work, procs


def free_port() -> int:
    """A TCP port free on loopback now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Managed:
    """A process started in its own session, so its whole group (agent + workers) can be stopped."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

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

    def cpu_seconds(self) -> float:
        """User + system CPU of the group's live processes (and of the children they have waited for)."""
        total = 0
        for pid in self.group():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def affinity(self) -> dict[int, list[int]]:
        out = {}
        for pid in self.group():
            with contextlib.suppress(OSError):
                out[pid] = sorted(os.sched_getaffinity(pid))
        return out

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

    def __init__(self, work: Path, cwd: Path = SERVERS) -> None:
        self.work = work
        self.cwd = cwd
        self.running: list[Managed] = []

    def start(
        self, name: str, args: list[str], cpu: int | str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Managed:
        """``args`` under ``taskset -c cpu`` in a session of its own, its output in ``<work>/<name>.log``."""
        log_path = self.work / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVERS), str(HERE), os.environ.get("PYTHONPATH")]))
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *args],
                cwd=cwd or self.cwd,
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
