"""The KServe SDK's own virtual environment, built on first use and reused while its pins hold.

kserve needs protobuf<7 (and kubernetes, pandas, ...) while anyserve-core
needs protobuf 7, so the SDK cannot share ``.venv``. :func:`ensure` builds
``.venv-kserve`` at the repository root with ``python -m venv`` and pip from
``requirements-kserve.txt`` (every package pinned), then writes a stamp with
the hash of that file and of the Python version; a later run whose stamp
matches reuses the environment as it is. A file lock keeps two test runs from
building it at once. ``ANYSERVE_KSERVE_VENV`` names another folder.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REQUIREMENTS = HERE / "requirements-kserve.txt"
DEFAULT_DIR = ROOT / ".venv-kserve"
STAMP = ".requirements-sha256"
#: A build takes about 35 s on two cores (cold or warm pip cache alike); this leaves room for a slow index.
INSTALL_TIMEOUT_S = 900.0
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
class KServeVenv:
    path: Path
    #: True when this call built it (False: reused as the stamp matched).
    built: bool
    seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def wanted_stamp() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()


def venv_dir() -> Path:
    return Path(os.environ.get("ANYSERVE_KSERVE_VENV") or DEFAULT_DIR)


def is_current(path: Path) -> bool:
    stamp = path / STAMP
    return (path / "bin" / "python").exists() and stamp.exists() and stamp.read_text().strip() == wanted_stamp()


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


def ensure(path: Path | None = None, timeout: float = INSTALL_TIMEOUT_S) -> KServeVenv:
    """The environment at ``path`` (default :func:`venv_dir`), built when missing or out of date.

    Raises :class:`IndexUnreachable` when pip cannot reach the index, and
    ``RuntimeError`` (with pip's output) for any other failure.
    """
    path = path or venv_dir()
    start = time.monotonic()
    with _locked(path):
        if is_current(path):
            return KServeVenv(path, built=False, seconds=time.monotonic() - start)
        shutil.rmtree(path, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(path)], timeout=120)
        python = str(path / "bin" / "python")
        deadline = start + timeout
        # --no-compile: byte-compiling ~70 packages up front is half the build; imports compile what they use
        pip = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
        _run([*pip, "-r", str(REQUIREMENTS)], timeout=max(1.0, deadline - time.monotonic()))
        # The SDK's client module imports, with the protobuf it was generated for.
        _run([python, "-c", "import kserve.inference_client"], timeout=120)
        (path / STAMP).write_text(wanted_stamp() + "\n")
    return KServeVenv(path, built=True, seconds=time.monotonic() - start)


if __name__ == "__main__":
    venv = ensure()
    print(f"{venv.path}: {'built' if venv.built else 'reused'} in {venv.seconds:.1f}s")
