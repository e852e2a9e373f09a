"""``anyserve.gc_policy``: what a started process does to Python's garbage collector, chosen by ANYSERVE_GC."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from anyserve import gc_policy
from anyserve.errors import ConfigError

PROBE = """
import gc, json
from anyserve import gc_policy
gc_policy.settle()
print(json.dumps({"young": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}))
"""


def settled(value: str | None) -> dict[str, int]:
    """``settle()`` in a fresh interpreter (it changes the whole process), with ANYSERVE_GC at ``value``."""
    env = {k: v for k, v in os.environ.items() if k != gc_policy.ENV}
    if value is not None:
        env[gc_policy.ENV] = value
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("value", [None, "tuned", " Tuned "])
def test_tuned_freezes_start_up_and_raises_the_young_threshold(value: str | None) -> None:
    state = settled(value)
    assert state["young"] == gc_policy.YOUNG
    assert state["frozen"] > 1000  # the interpreter's and anyserve's modules, out of the collector's sight


def test_default_leaves_pythons_collector_alone() -> None:
    assert settled("default") == {"young": 700, "frozen": 0}


def test_an_unknown_policy_is_a_config_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gc_policy.ENV, "off")
    with pytest.raises(ConfigError, match="ANYSERVE_GC='off' is not one of tuned, default"):
        gc_policy.choice()
