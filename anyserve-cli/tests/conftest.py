"""Fixtures: a CLI built on a private plugin manager, run in an empty directory.

The manager holds core's built-ins plus anyserve-cli's own plugin (registered
with the origin its entry point would give it), never the plugins installed in
the environment, so these tests pass with only anyserve-core and anyserve-cli.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import anyserve_cli.commands
from anyserve.plugins import PluginManager, PluginOrigin, create_plugin_manager
from anyserve_cli.main import build_cli
from anyserve_cli.version import __version__

CLI_ORIGIN = PluginOrigin("cli", "anyserve-cli", __version__, builtin=False)

Invoke = Callable[..., Result]


@pytest.fixture
def cli_pm() -> PluginManager:
    """Built-ins plus anyserve-cli's plugin; tests register more on it."""
    pm = create_plugin_manager(entrypoints=False, env={})
    assert pm.register_checked(anyserve_cli.commands, CLI_ORIGIN)
    return pm


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cwd and no ANYSERVE_* variables: no stray configuration applies."""
    for var in [v for v in os.environ if v.startswith("ANYSERVE_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def invoke(cli_pm: PluginManager, workdir: Path) -> Invoke:
    """Run ``anyserve ARGS...`` in-process; ``env=`` adds environment variables."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        # Wide enough that no table cell wraps the words tests look for.
        return runner.invoke(build_cli(cli_pm), list(args), env={"COLUMNS": "250", **(env or {})})

    return run
