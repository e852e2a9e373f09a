"""Run the plugin's light tests from source even where it is not installed.

The base suite runs without the optional model install (torch,
sentence-transformers), so ``anyserve_capability_minilm`` may be absent;
its import needs only ``anyserve``, so the hook and parsing tests still run.
Tests that need the model skip, saying how to install it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

if importlib.util.find_spec("anyserve_capability_minilm") is None:
    sys.path.insert(0, str(SRC))


def pytest_configure(config: pytest.Config) -> None:
    # Also registered by the repository; repeated so this folder runs on its own.
    config.addinivalue_line("markers", "model: loads a real model (needs the optional model install)")
