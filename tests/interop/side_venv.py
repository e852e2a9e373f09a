"""A side virtual environment: built on first use from a pinned requirements file, reused while its pins hold.

Some tests drive a third-party tool whose dependencies cannot (or should not)
share ``.venv``: the KServe SDK needs protobuf<7, guidellm pulls torch. A
:class:`SideVenv` names such an environment: a folder at the repository root
(another one through an environment variable), a requirements file with
every package pinned, and a Python snippet that must run in it.
:meth:`SideVenv.ensure` builds it with ``python -m venv`` and pip, runs the
snippet, then writes a stamp with the hash of the requirements file and of
the Python version; a later run whose stamp matches reuses the environment as
it is. A file lock next to the folder keeps two test runs from building it at
once. When pip cannot reach the package index at all, :class:`IndexUnreachable`
says so, and a test may skip on it; any other failure is an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".requirements-sha256"
#: pip's words when the package index cannot be reached at all (not when a package is missing).
UNREACHABLE = (
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Failed to establish a new connection",
    "Connection refused",
    "No route to host",
    "ConnectTimeoutError",
    "ProxyError",
)


class IndexUnreachable(RuntimeError):
    """pip could not reach the package index: the environment cannot be built here."""


@dataclass(frozen=True)
class Built:
    """An environment :meth:`SideVenv.ensure` made sure of."""

    path: Path
    #: True when this call built it (False: reused as the stamp matched).
    built: bool
    seconds: float

    @property
    def python(self) -> Path:
        return self.bin("python")

    def bin(self, name: str) -> Path:
        """A console script (or any executable) the environment installed."""
        return self.path / "bin" / name


@dataclass(frozen=True)
class SideVenv:
    """Where a side environment lives and what goes in it."""

    #: The folder's name at the repository root, e.g. ``.venv-kserve``.
    name: str
    #: Every package pinned; editing the file rebuilds the environment.
    requirements: Path
    #: An environment variable that, when set, names another folder.
    env_var: str
    #: Python code run in the new environment before it is stamped (an import that must work).
    check: str
    #: For venv creation, pip and the check together.
    install_timeout: float = 900.0

    @property
    def default_dir(self) -> Path:
        return ROOT / self.name

    def venv_dir(self) -> Path:
        return Path(os.environ.get(self.env_var) or self.default_dir)

    def wanted_stamp(self) -> str:
        digest = hashlib.sha256(self.requirements.read_bytes())
        digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}".encode())
        return digest.hexdigest()

    def is_current(self, path: Path) -> bool:
        stamp = path / STAMP
        return (
            (path / "bin" / "python").exists() and stamp.exists() and stamp.read_text().strip() == self.wanted_stamp()
        )

    def ensure(self, path: Path | None = None, timeout: float | None = None) -> Built:
        """The environment at ``path`` (default :meth:`venv_dir`), built when missing or out of date.

        Raises :class:`IndexUnreachable` when pip cannot reach the index, and
        ``RuntimeError`` (with pip's output) for any other failure.
        """
        path = path or self.venv_dir()
        start = time.monotonic()
        deadline = start + (self.install_timeout if timeout is None else timeout)
        with _locked(path):
            if self.is_current(path):
                return Built(path, built=False, seconds=time.monotonic() - start)
            shutil.rmtree(path, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(path)], timeout=120)
            python = str(path / "bin" / "python")
            # --no-compile: byte-compiling every package up front is half the build; imports compile what they use
            pip = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
            _run([*pip, "-r", str(self.requirements)], timeout=_left(deadline))
            _run([python, "-c", self.check], timeout=max(120.0, _left(deadline)))
            (path / STAMP).write_text(self.wanted_stamp() + "\n")
        return Built(path, built=True, seconds=time.monotonic() - start)


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], timeout: float) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode == 0:
        return
    output = f"{result.stdout}\n{result.stderr}"
    gave_up = "No matching distribution found" in output or "Could not fetch URL" in output
    if gave_up and any(marker in output for marker in UNREACHABLE):
        raise IndexUnreachable(f"the package index is unreachable; {' '.join(cmd)} said:\n{output[-3000:]}")
    raise RuntimeError(f"{' '.join(cmd)} exited with {result.returncode}:\n{output[-6000:]}")
