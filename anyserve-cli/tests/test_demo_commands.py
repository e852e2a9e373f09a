"""What ``anyserve demo`` prints to paste into another terminal works there as printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from anyserve_cli.demo.cluster import activate_hint, anyserve_command

#: A new terminal's PATH: no virtual environment's bin on it.
BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}


def test_the_printed_command_runs_without_the_environment_on_path(tmp_path: Path) -> None:
    command = anyserve_command()
    if sys.prefix != sys.base_prefix:  # a virtual environment: never the bare name
        assert command != "anyserve"
    out = subprocess.run(f"{command} --version", shell=True, cwd=tmp_path, env=BARE_ENV,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("anyserve ")


def test_the_activate_line_makes_plain_anyserve_work(tmp_path: Path) -> None:
    hint = activate_hint()
    if sys.prefix == sys.base_prefix:
        assert hint is None
        return
    assert hint is not None and hint.startswith("source /")
    if not (Path(sys.prefix) / "bin" / "anyserve").exists():
        return  # the script is installed only with the distribution, not from source
    out = subprocess.run(["bash", "-c", f"{hint} && anyserve --version"], cwd=tmp_path, env=BARE_ENV,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
