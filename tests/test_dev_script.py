"""``./dev`` sets up the virtual environment step by step, saying what it does.

A stand-in environment replaces pip (its ``python`` answers ``-m pip`` with
scripted output) and ``anyserve``, so the bootstrap runs in a second instead
of minutes and never touches the real ``.venv``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "pip $*" >>"$(dirname "$0")/../pip-calls"
  if [ -n "${FAKE_PIP_FAIL:-}" ]; then
    echo "Collecting nope"
    echo "ERROR: No matching distribution found for nope"
    exit 1
  fi
  echo "Collecting alpha"
  echo "  Downloading alpha-1.0-py3-none-any.whl (10 kB)"
  echo "Requirement already satisfied: beta in ./site-packages"
  echo "Installing collected packages: alpha, gamma, delta"
  echo "Successfully installed alpha-1.0 gamma-3.0 delta-4.0"
  exit 0
fi
exec PYTHON "$@"
"""

FAKE_ANYSERVE = """#!/usr/bin/env bash
echo "stand-in anyserve: $*"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _fake_venv(where: Path) -> Path:
    venv = where / "venv"
    (venv / "bin").mkdir(parents=True)
    _executable(venv / "bin" / "python", FAKE_PYTHON.replace("PYTHON", sys.executable))
    _executable(venv / "bin" / "anyserve", FAKE_ANYSERVE)
    return venv


def _dev(venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "ANYSERVE_VENV": str(venv), "PYTHON": sys.executable, **env}
    return subprocess.run([str(ROOT / "dev"), *args], env=full_env, capture_output=True, text=True, timeout=120)


def test_the_first_run_shows_each_step_then_runs_the_command(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path)
    first = _dev(venv, "demo", "--keep-running")
    assert first.returncode == 0, first.stderr
    err = first.stderr
    dists = sum(line.startswith("-e ") for line in (ROOT / "requirements-dev.txt").read_text().splitlines())
    for step in (
        f"==> setting up {venv}",
        f"==> [1/3] reusing the virtual environment in {venv}",
        "==> [2/3] upgrading pip",
        f"==> [3/3] installing {dists} anyserve distributions (editable)",
        "    resolving requirements",
        "    downloading packages",
        "    installing 3 packages",
        "    installed 3 packages",
        f"pip's full output: {venv}/pip-install.log",
        f"'source {venv}/bin/activate'",
    ):
        assert step in err, f"{step!r} missing from:\n{err}"
    assert "Requirement already satisfied" not in err  # pip's chatter stays in the log...
    assert "Requirement already satisfied" in (venv / "pip-install.log").read_text()  # ...all of it
    assert first.stdout == "stand-in anyserve: demo --keep-running\n"
    calls = (venv / "pip-calls").read_text().splitlines()
    assert [c.split(" install ")[1] for c in calls] == ["--progress-bar off --upgrade pip",
                                                        "--progress-bar off -r requirements-dev.txt"]  # fmt: skip

    again = _dev(venv, "demo")
    assert again.returncode == 0
    assert again.stderr == ""  # set up already: straight to the command
    assert again.stdout == "stand-in anyserve: demo\n"


def test_a_failing_pip_shows_its_error_and_leaves_the_setup_to_redo(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path)
    result = _dev(venv, "demo", FAKE_PIP_FAIL="1")
    assert result.returncode == 1
    assert "    ERROR: No matching distribution found for nope" in result.stderr
    assert "pip failed (exit 1)" in result.stderr
    assert not (venv / ".installed").exists()
    assert "stand-in anyserve" not in result.stdout
