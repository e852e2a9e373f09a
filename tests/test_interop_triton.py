"""The official Triton clients work unchanged against a replica and against the router.

tritonclient.grpc talks to a replica's KServe v2 gRPC service and to the
router's gRPC port (``anyserve router --grpc-port``); tritonclient.http talks
to the router's KServe v2 REST API with binary tensor data on, its default.
Each client runs in a process of its own (tests/interop/triton_*_client.py):
tritonclient registers its own ``inference.*`` protobuf messages, which clash
with anyserve's in one process, so only ``find_spec`` looks for it here.

requirements-dev.txt pins ``tritonclient[grpc,http]==2.41.0``: every later
release caps protobuf below 7, which anyserve-core needs.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator

import pytest
from interop.harness import (
    Reports,
    Servers,
    all_binary,
    check_health,
    check_metadata,
    check_not_found,
    check_outputs,
    ok,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("geventhttpclient") is None,
        reason='needs tritonclient: pip install "tritonclient[grpc,http]==2.41.0" (see requirements-dev.txt)',
    ),
]

SCRIPTS = {
    "replica": "triton_grpc_client.py",
    "router-grpc": "triton_grpc_client.py",
    "router-http": "triton_http_client.py",
}
TARGETS = list(SCRIPTS)
GRPC_TARGETS = ["replica", "router-grpc"]
ERROR_TYPE = "tritonclient.utils.InferenceServerException"
NOT_FOUND = {"replica": "StatusCode.NOT_FOUND", "router-grpc": "StatusCode.NOT_FOUND", "router-http": "404"}


@pytest.fixture(scope="module")
def reports() -> Iterator[Reports]:
    servers = Servers()
    try:
        yield Reports(servers, sys.executable, SCRIPTS)
    finally:
        servers.close()


@pytest.mark.parametrize("target", TARGETS)
def test_live_and_ready(reports: Reports, target: str) -> None:
    check_health(reports(target))


@pytest.mark.parametrize("target", TARGETS)
def test_infer_bytes_fp32_int64_through_as_numpy(reports: Reports, target: str) -> None:
    report = reports(target)
    result = ok(report, "infer")
    assert (result["id"], result["model_name"]) == ("interop-1", "mixed"), result
    # tritonclient asks for binary outputs when it names none; its gRPC side reads raw contents only
    check_outputs(result, all_binary(True) if target == "router-http" else None)
    if target != "router-http":
        assert result["raw_outputs"] == 3, result


@pytest.mark.parametrize("target", TARGETS)
def test_version_and_capability_headers_route(reports: Reports, target: str) -> None:
    report = reports(target)
    check_outputs(ok(report, "infer_versioned"))
    check_outputs(ok(report, "routed"))


def test_http_binary_per_output_and_plain_json(reports: Reports) -> None:
    report = reports("router-http")
    check_outputs(ok(report, "infer_mixed_outputs"), {"text_out": True, "x_out": False, "n_out": True})
    check_outputs(ok(report, "infer_json"), all_binary(False))


@pytest.mark.parametrize("target", TARGETS)
def test_model_metadata_lists_declared_tensors(reports: Reports, target: str) -> None:
    report = reports(target)
    check_metadata(ok(report, "metadata"))
    check_metadata(ok(report, "metadata_versioned"), version="1")
    server = ok(report, "server_metadata")
    assert server["name"], server


@pytest.mark.parametrize("target", TARGETS)
def test_unknown_model_is_not_found(reports: Reports, target: str) -> None:
    report = reports(target)
    check_not_found(report, "unknown_infer", ERROR_TYPE, NOT_FOUND[target])
    check_not_found(report, "unknown_metadata", ERROR_TYPE, NOT_FOUND[target])


@pytest.mark.parametrize("target", GRPC_TARGETS)
def test_stream_tokens_through_the_callback(reports: Reports, target: str) -> None:
    stream = ok(reports(target), "stream")
    assert stream["error"] is None, stream
    assert stream["tokens"] == ["one", "two", "three"], stream
    assert stream["finish_reason"] == "stop", stream


@pytest.mark.parametrize("target", GRPC_TARGETS)
def test_stream_to_unknown_model_reaches_the_callback_as_not_found(reports: Reports, target: str) -> None:
    stream = ok(reports(target), "stream_unknown")
    assert stream["tokens"] == [], stream
    assert stream["error"] is not None and "NOT_FOUND" in stream["error"]["text"], stream
    assert "nope" in stream["error"]["text"], stream
