"""The real entry points: ``python -m anyserve_cli`` in a subprocess.

Unlike the in-process tests this loads anyserve-cli's own plugin through its
installed ``anyserve`` entry point, as the ``anyserve`` script does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyserve
from anyserve_cli.version import __version__


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSERVE_")}
    # Only anyserve-cli's entry point: sibling plugins installed in a dev
    # environment must not change what this test sees.
    env["ANYSERVE_LOAD_PLUGINS"] = "anyserve-cli"
    return subprocess.run(
        [sys.executable, "-m", "anyserve_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version(tmp_path: Path) -> None:
    result = _run("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"anyserve {__version__} (core {anyserve.__version__})"


def test_plugins_list_json_through_the_entry_point(tmp_path: Path) -> None:
    result = _run("plugins", "list", "--json", "--all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    cli = plugins["cli"]
    assert (cli["distribution"], cli["version"], cli["status"]) == ("anyserve-cli", __version__, "ok")
    assert "plugins" in cli["contributes"]["commands"]
    assert {"inproc", "memory", "subset", "jsonl", "least_loaded", "delegation"} <= set(plugins)


def test_config_error_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "anyserve.toml").write_text("[transport]\nnmae = 'unix'\n")
    result = _run("plugins", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "transport.nmae" in result.stderr and "unknown setting" in result.stderr
    assert "Traceback" not in result.stderr
