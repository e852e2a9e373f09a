"""A two-replica pipeline end to end: an object created on one replica, read on another by reference.

Replica A (``objects_apps:producer``) stores the data in the shared ``fs``
store and calls capability ``digest`` through the router with only the
reference; replica B (``objects_apps:consumer``) resolves it from the same
directory. Both are real ``anyserve start`` processes registered with a real
``anyserve router``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from processes import Replica, Router
from router_http import wait_registered

from anyserve import Client, InferenceError, ObjRef


@pytest.fixture
def object_dir(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def pipeline(start_router, start_replica, object_dir) -> tuple[Router, dict[str, Replica]]:
    router = start_router()
    common = ("--api-server", router.url, "--object-store", f"file://{object_dir}")
    replicas = {
        name: start_replica(f"objects_apps:{name}", *common, "--replica-id", f"replica-{name}")
        for name in ("producer", "consumer")
    }
    wait_registered(router.url, 2)
    return router, replicas


def _stored(object_dir: Path) -> list[Path]:
    return [p for p in object_dir.rglob("*") if p.is_file() and "~" not in p.name]


def test_a_reference_crosses_replicas_through_the_router(pipeline, object_dir):
    _, replicas = pipeline
    blob = os.urandom(3 * 1024 * 1024 + 17)
    with Client(replicas["producer"].endpoint, timeout=60) as client:
        result = client.infer("produce", {"payload": blob})
    assert result["length"] == [len(blob)]
    assert result["sha256"] == [hashlib.sha256(blob).hexdigest()]
    assert result["replica"] == ["replica-consumer"]
    assert result["ref"][0].startswith("fs://")
    assert _stored(object_dir) == []  # the producer deleted its object once the call returned


def test_the_pipeline_runs_from_a_plain_http_client(pipeline, object_dir):
    router, _ = pipeline
    body = {"inputs": [{"name": "size", "datatype": "INT64", "shape": [1], "data": [8 * 1024 * 1024]}]}
    answer = httpx.post(f"{router.url}/infer", json=body, headers={"X-Capability-Type": "produce"}, timeout=60)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    expected = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    assert outputs["length"] == [len(expected)]
    assert outputs["sha256"] == [hashlib.sha256(expected).hexdigest()]
    assert answer.headers["X-Served-By"] == "replica-producer"


def test_a_reference_can_travel_as_a_request_parameter(pipeline):
    _, replicas = pipeline
    with Client(replicas["producer"].endpoint, timeout=60) as client:
        result = client.infer("produce-param", {"payload": b"by parameter"})
    assert result["length"] == [len(b"by parameter")]
    assert result["sha256"] == [hashlib.sha256(b"by parameter").hexdigest()]


def test_a_plain_kserve_client_sends_a_reference_through_the_router(pipeline, object_dir):
    """JSON over HTTP: a BYTES element holding the ref string, flagged by the tensor parameter."""
    router, _ = pipeline
    from anyserve_objects_fs import FileStore

    ref = FileStore(object_dir).create(b"written by the client")
    tensor = {"name": "data", "datatype": "BYTES", "shape": [1], "data": [str(ref)]}
    body = {"inputs": [{**tensor, "parameters": {"anyserve.objref": True}}]}
    answer = httpx.post(f"{router.url}/infer", json=body, headers={"X-Capability-Type": "digest"}, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs["length"] == [len(b"written by the client")]
    # and as a request parameter, no tensor at all
    body = {"inputs": [], "parameters": {"anyserve.objref.data": str(ref)}}
    answer = httpx.post(f"{router.url}/infer", json=body, headers={"X-Capability-Type": "digest"}, timeout=30)
    assert answer.status_code == 200, answer.text
    # without the flag the same string is just text: the handler says so instead of guessing
    answer = httpx.post(
        f"{router.url}/infer", json={"inputs": [tensor]}, headers={"X-Capability-Type": "digest"}, timeout=30
    )
    assert answer.status_code == 400 and "not a single object reference" in answer.text


def test_the_shared_memory_shape_works_over_grpc(pipeline, object_dir):
    """Triton's shared-memory shape: contents left empty, the reference in the tensor's string parameter."""
    _, replicas = pipeline
    from anyserve import ModelInferRequest
    from anyserve.protocol.messages import GRPCInferenceServiceStub
    from anyserve_objects_fs import FileStore

    ref = FileStore(object_dir).create(b"shared memory style")
    request = ModelInferRequest(model_name="digest")
    tensor = request.inputs.add(name="data", datatype="BYTES", shape=[1])
    tensor.parameters["anyserve.objref"].string_param = str(ref)
    import grpc

    with grpc.insecure_channel(replicas["consumer"].endpoint) as channel:
        response = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    lengths = {o.name: list(o.contents.int64_contents) for o in response.outputs}
    assert lengths["length"] == [len(b"shared memory style")]


def test_a_missing_object_is_not_found_naming_the_reference(pipeline):
    router, replicas = pipeline
    gone = ObjRef("fs", "never-created")
    with Client(replicas["consumer"].endpoint, timeout=30) as client, pytest.raises(InferenceError) as info:
        client.infer("digest", {"data": gone})
    assert info.value.code == "NOT_FOUND"
    assert "fs://never-created" in info.value.message
    # through the router: HTTP 404 with the reference in the message
    body = {"inputs": [], "parameters": {"anyserve.objref.data": "fs://also-missing"}}
    answer = httpx.post(f"{router.url}/infer", json=body, headers={"X-Capability-Type": "digest"}, timeout=30)
    assert answer.status_code == 404
    assert "fs://also-missing" in answer.text


def test_references_that_leave_the_store_or_name_another_backend_are_refused(pipeline):
    _, replicas = pipeline
    with Client(replicas["consumer"].endpoint, timeout=30) as client:
        for bad in (ObjRef("fs", "../../etc/passwd"), ObjRef("fs", "/etc/passwd"), ObjRef("mem", "x")):
            with pytest.raises(InferenceError) as info:
                client.infer("digest", {"data": bad})
            assert info.value.code == "INVALID_ARGUMENT", bad
        with pytest.raises(InferenceError) as info:
            client.infer("digest", {"data": "fs://not-a-ref-tensor"})
        assert info.value.code == "INVALID_ARGUMENT"
        assert "not a single object reference" in info.value.message
