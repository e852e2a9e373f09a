"""``anyserve.event_loop``: which loop the agent, its workers and the router run, chosen by ANYSERVE_EVENT_LOOP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from anyserve import event_loop
from anyserve.errors import ConfigError

uvloop = pytest.importorskip("uvloop")  # a dependency of anyserve-core wherever it installs


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


STANDARD = "asyncio.unix_events"


@pytest.mark.parametrize(
    ("value", "module"),
    [(None, "uvloop"), ("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", STANDARD), (" Asyncio ", STANDARD)],
)
def test_the_setting_picks_the_loop(monkeypatch: pytest.MonkeyPatch, value: str | None, module: str) -> None:
    if value is None:
        monkeypatch.delenv(event_loop.ENV, raising=False)
    else:
        monkeypatch.setenv(event_loop.ENV, value)
    assert event_loop.run(loop_module()) == module


def test_an_unknown_loop_is_a_config_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "trio")
    with pytest.raises(ConfigError, match="ANYSERVE_EVENT_LOOP='trio' is not one of auto, uvloop, asyncio"):
        event_loop.loop_factory()


def test_uvloop_required_but_missing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop.loop_factory()
    monkeypatch.setenv(event_loop.ENV, "auto")
    assert event_loop.loop_factory() is None  # auto falls back to the standard loop


def test_a_bad_setting_stops_anyserve_start_with_one_error_line(tmp_path) -> None:
    """The replica's own command (``python -m anyserve start``) refuses before serving anything."""
    env = {**os.environ, event_loop.ENV: "trio", "ANYSERVE_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "anyserve", "start", "--app", "nothing_here:app", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "ANYSERVE_EVENT_LOOP='trio' is not one of auto, uvloop, asyncio" in done.stderr
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr
