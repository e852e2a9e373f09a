"""The KServe SDK's own virtual environment, built on first use and reused while its pins hold.

kserve needs protobuf<7 (and kubernetes, pandas, ...) while anyserve-core
needs protobuf 7, so the SDK cannot share ``.venv``. :func:`ensure` builds
``.venv-kserve`` at the repository root from ``requirements-kserve.txt``
(every package pinned) and reuses it while that file and the Python version
are unchanged (see :mod:`side_venv`). ``ANYSERVE_KSERVE_VENV`` names another
folder. Build it ahead of the tests with ``python tests/interop/kserve_venv.py``.
"""

from __future__ import annotations

from pathlib import Path

if __package__:
    from .side_venv import Built, IndexUnreachable, SideVenv
else:  # run as a script: tests/interop is on sys.path
    from side_venv import Built, IndexUnreachable, SideVenv

__all__ = ["DEFAULT_DIR", "KSERVE", "REQUIREMENTS", "IndexUnreachable", "KServeVenv", "ensure", "venv_dir"]

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-kserve.txt"
#: A build takes about 35 s on two cores (cold or warm pip cache alike); the timeout leaves room for a slow index.
KSERVE = SideVenv(
    name=".venv-kserve",
    requirements=REQUIREMENTS,
    env_var="ANYSERVE_KSERVE_VENV",
    # The SDK's client module imports, with the protobuf it was generated for.
    check="import kserve.inference_client",
    install_timeout=900.0,
)
DEFAULT_DIR = KSERVE.default_dir
#: What :func:`ensure` returns: ``.path``, ``.built``, ``.seconds`` and ``.python``.
KServeVenv = Built


def venv_dir() -> Path:
    return KSERVE.venv_dir()


def ensure(path: Path | None = None, timeout: float | None = None) -> KServeVenv:
    """``.venv-kserve`` (or ``path``), built when missing or out of date.

    Raises :class:`IndexUnreachable` when pip cannot reach the index, and
    ``RuntimeError`` (with pip's output) for any other failure.
    """
    return KSERVE.ensure(path, timeout)


if __name__ == "__main__":
    venv = ensure()
    print(f"{venv.path}: {'built' if venv.built else 'reused'} in {venv.seconds:.1f}s")
