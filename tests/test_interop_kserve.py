"""kserve's own inference clients work unchanged against a replica and against the router.

``InferenceGRPCClient`` talks to a replica and to the router's gRPC port;
``InferenceRESTClient`` (protocol v2) to the router's REST API, with binary
input data (``set_data_from_numpy``'s default) and binary or JSON outputs.
kserve needs protobuf<7 and heavy dependencies, so the clients run with
``.venv-kserve`` (built by the ``kserve_python`` fixture from
tests/interop/requirements-kserve.txt, reused while its pins hold), each in
a process of its own (tests/interop/kserve_*_client.py). kserve 0.21 has no
metadata call and no streaming in these clients: metadata goes through the
gRPC stub kserve ships and a plain GET read with kserve's response model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from interop import kserve_venv
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

pytestmark = pytest.mark.slow

SCRIPTS = {
    "replica": "kserve_grpc_client.py",
    "router-grpc": "kserve_grpc_client.py",
    "router-http": "kserve_rest_client.py",
}
TARGETS = list(SCRIPTS)
GRPC_TARGETS = ["replica", "router-grpc"]
NOT_FOUND = {
    "replica": ("grpc.aio._call.AioRpcError", "StatusCode.NOT_FOUND"),
    "router-grpc": ("grpc.aio._call.AioRpcError", "StatusCode.NOT_FOUND"),
    "router-http": ("httpx.HTTPStatusError", "404"),
}


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """.venv-kserve's python: built on first use (about a minute), skipped only when the index is unreachable."""
    try:
        return kserve_venv.ensure().python
    except kserve_venv.IndexUnreachable as exc:
        pytest.skip(f"cannot build .venv-kserve: {exc}")


@pytest.fixture(scope="module")
def reports(kserve_python: Path) -> Iterator[Reports]:
    servers = Servers()
    try:
        yield Reports(servers, kserve_python, SCRIPTS)
    finally:
        servers.close()


@pytest.mark.parametrize("target", TARGETS)
def test_live_and_ready(reports: Reports, target: str) -> None:
    check_health(reports(target), versioned=False)


@pytest.mark.parametrize("target", TARGETS)
def test_infer_bytes_fp32_int64_through_as_numpy(reports: Reports, target: str) -> None:
    result = ok(reports(target), "infer")
    assert (result["id"], result["model_name"]) == ("interop-1", "mixed"), result
    # the REST client asks for no binary outputs unless told: JSON back
    check_outputs(result, all_binary(False) if target == "router-http" else None)


@pytest.mark.parametrize("target", GRPC_TARGETS)
def test_grpc_version_typed_contents_and_capability_headers(reports: Reports, target: str) -> None:
    report = reports(target)
    check_outputs(ok(report, "infer_versioned"))
    check_outputs(ok(report, "infer_contents"))
    check_outputs(ok(report, "routed"))


def test_rest_binary_outputs_json_inputs_and_capability_headers(reports: Reports) -> None:
    report = reports("router-http")
    check_outputs(ok(report, "infer_binary_outputs"), all_binary(True))
    check_outputs(ok(report, "infer_json"), all_binary(False))
    check_outputs(ok(report, "routed"), all_binary(False))


@pytest.mark.parametrize("target", TARGETS)
def test_model_metadata_lists_declared_tensors(reports: Reports, target: str) -> None:
    report = reports(target)
    check_metadata(ok(report, "metadata"))
    check_metadata(ok(report, "metadata_versioned"), version="1")


@pytest.mark.parametrize("target", TARGETS)
def test_unknown_model_is_not_found(reports: Reports, target: str) -> None:
    error_type, status = NOT_FOUND[target]
    report = reports(target)
    check_not_found(report, "unknown_infer", error_type, status)
    check_not_found(report, "unknown_metadata", error_type, status)
