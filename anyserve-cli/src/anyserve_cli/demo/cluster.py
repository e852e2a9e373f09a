"""A router and replicas as child processes on free loopback ports.

Each member runs the real ``anyserve`` command in its own session, its
output going to a log file, so stopping the cluster (or a crash of the
launcher) never leaves an agent or worker behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

READY = " ready at "


def anyserve_command() -> str:
    """How to run ``anyserve`` from another terminal, as text to print.

    Inside a virtual environment (``./dev demo`` creates ``.venv`` and only
    puts its ``bin`` on the demo's own ``PATH``) a new terminal has no
    ``anyserve``, so the command is the absolute path of the script installed
    beside this interpreter. Only an install outside any virtual environment,
    whose script is on ``PATH``, prints the bare name. With no script at all
    it is this interpreter running the module.
    """
    script = Path(sys.executable).parent / "anyserve"
    in_venv = sys.prefix != sys.base_prefix
    if script.is_file() and os.access(script, os.X_OK):
        found = shutil.which("anyserve")
        if not in_venv and found is not None and Path(found).resolve() == script.resolve():
            return "anyserve"
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(sys.executable)} -m anyserve_cli"


def activate_hint() -> str | None:
    """The line that makes a bare ``anyserve`` work in a new terminal; None outside a virtual environment."""
    if sys.prefix == sys.base_prefix:
        return None
    activate = Path(sys.prefix) / "bin" / "activate"
    return f"source {shlex.quote(str(activate))}" if activate.is_file() else None


class ClusterError(RuntimeError):
    """A member did not start; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    name: str
    proc: subprocess.Popen[str]
    log: Path
    address: str = ""
    _ready: threading.Event = field(default_factory=threading.Event)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class LocalCluster:
    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.members: list[Member] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Member:
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "anyserve_cli", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env={**self.env, **(env or {})}, start_new_session=True,
        )  # fmt: skip
        member = Member(name, proc, log)
        self.members.append(member)
        threading.Thread(target=self._pump, args=(member,), daemon=True).start()
        return member

    @staticmethod
    def _pump(member: Member) -> None:
        assert member.proc.stdout is not None
        with member.log.open("w") as out:
            for line in member.proc.stdout:
                out.write(line)
                out.flush()
                if READY in line and not member._ready.is_set():
                    member.address = line.split(READY, 1)[1].split()[0]
                    member._ready.set()

    def _wait(self, member: Member, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not member._ready.wait(0.1):
            if member.proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"{member.name} did not start; its log ({member.log}):\n{member.tail()}")
        return member.address

    def start_router(self, *args: str, timeout: float = 60.0) -> str:
        member = self._spawn("router", ["router", "--port", str(free_port()), *args])
        return self._wait(member, timeout)

    def start_replica(
        self, name: str, app: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> str:
        """A replica of ``app``; with None, of what installed capability plugins contribute (``env`` narrows them)."""
        app_args = ["--app", app] if app is not None else []
        member = self._spawn(name, ["start", *app_args, "--port", "0", "--replica-id", name, *args], env)
        return self._wait(member, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everyone (replicas first, so they deregister), then SIGKILL what is left."""
        for member in reversed(self.members):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for member in reversed(self.members):
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(member.proc.pid, signal.SIGKILL)
            member.proc.wait()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
