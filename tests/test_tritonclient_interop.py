"""The official Triton client (``tritonclient[grpc]``) talks to a replica unchanged.

tritonclient registers its own ``inference.*`` protobuf messages in the
default descriptor pool, which clash with anyserve's, so the client runs in a
subprocess (``tests/interop/triton_client_checks.py``) that prints JSON, and
this test asserts on it. Only ``importlib.util.find_spec`` looks for
tritonclient here: importing it in this process would be the clash.

Every tritonclient after 2.41.0 caps protobuf below 7 while anyserve-core
needs protobuf 7, so requirements-dev.txt pins ``tritonclient[grpc,http]==2.41.0``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import Replica

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("tritonclient") is None,
        reason='needs tritonclient: pip install "tritonclient[grpc]==2.41.0" (see requirements-dev.txt)',
    ),
]

SCRIPT = Path(__file__).resolve().parent / "interop" / "triton_client_checks.py"


def run_checks(endpoint: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), endpoint], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"tritonclient script failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture
def report(start_replica: Callable[..., Replica], transport: str) -> dict[str, Any]:
    return run_checks(start_replica(transport=transport).endpoint)


def test_health_through_tritonclient(report: dict[str, Any]) -> None:
    assert (report["live"], report["ready"]) == (True, True)
    assert (report["echo_ready"], report["nope_ready"]) == (True, False)


def test_model_infer_with_bytes_and_fp32_inputs(report: dict[str, Any]) -> None:
    unary = report["unary"]
    assert unary["id"] == "tc-1"
    assert unary["inputs_went_raw"]  # tritonclient sends raw contents; the echo sends them back
    assert (unary["text"], unary["text_shape"], unary["text_datatype"]) == (["hello", "wörld"], [2], "BYTES")
    assert unary["vector_datatype"] == "FP32" and unary["vector_dtype"] == "float32"
    assert unary["vector_shape"] == [2, 2]
    # float32 values exactly as sent (0.001 is the nearest float32, as tritonclient sent it)
    assert unary["vector"][0] == [0.5, -1.25] and unary["vector"][1][0] == 3.0
    assert abs(unary["vector"][1][1] - 1e-3) < 1e-9


def test_capability_headers_and_errors_through_tritonclient(report: dict[str, Any]) -> None:
    routed = report["routed"]
    assert routed["served_by"] == "chat-eu" and routed["x"] == [7]
    assert routed["unknown"]["status"] == "StatusCode.NOT_FOUND"
    assert "{'type': 'nope'}" in routed["unknown"]["message"]


def test_triton_bidirectional_stream(report: dict[str, Any]) -> None:
    stream = report["stream"]
    assert stream["error"] is None
    assert stream["tokens"] == ["Hello", " ", "world", "!"]
    assert stream["text"] == "Hello world!" and stream["finish_reason"] == "stop"


def test_stream_error_reaches_the_callback(report: dict[str, Any]) -> None:
    unknown = report["stream_unknown"]
    assert unknown["tokens"] == []
    assert unknown["error"].startswith("NOT_FOUND: ") and "{'type': 'nope'}" in unknown["error"]
