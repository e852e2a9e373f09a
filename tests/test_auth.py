"""Who may call what, end to end: a real router and a replica that joins it with the cluster token.

The data plane here is guarded by API keys from a key file: one key for
everything, one limited to ``{type: echo}``. Each front refuses in its own
shape: KServe v2 JSON (``{"error", "code"}``), OpenAI (the SDK's exception
classes) and gRPC status codes. The control plane is tried as a stranger
would: registering, hijacking a replica's id, reading a replica's status,
dialling its router link.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import grpc
import httpx
import openai
import pytest
from kserve import Wire, request
from processes import free_port
from router_http import member_headers

from anyserve.errors import Unauthenticated
from anyserve.status_client import STATUS_METHOD, replica_status
from anyserve_transport_unix import TcpTransport

FULL = "sk-full-access-0123456789"
ECHO_ONLY = "sk-echo-only-0123456789"
BODY = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    digest = hashlib.sha256(ECHO_ONLY.encode()).hexdigest()
    path.write_text(
        f'[[keys]]\nname = "all"\nkey = "{FULL}"\n\n'
        f'[[keys]]\nname = "echo-team"\nsha256 = "{digest}"\ncapabilities = [{{type = "echo"}}]\n'
    )
    return str(path)


@pytest.fixture
def cluster(start_router, start_replica, key_file):
    """(router URL, gRPC front address, replica): the replica registered by itself, with the cluster token."""
    grpc_port = free_port()
    router = start_router("--grpc-port", str(grpc_port), ANYSERVE_API_KEYS_FILE=key_file)
    replica = start_replica("echo_app:app", "--api-server", router.url, transport="inproc")
    with httpx.Client(base_url=router.url, timeout=30, headers={"X-Api-Key": FULL}) as http:
        for _ in range(100):
            if http.get("/registry").json()["replicas"]:
                break
            time.sleep(0.05)
    return router.url, f"127.0.0.1:{grpc_port}", replica


def test_api_keys_guard_every_front_each_refusing_in_its_own_shape(cluster):
    url, grpc_address, _ = cluster
    with httpx.Client(base_url=url, timeout=30) as http:
        echo = {"X-Capability-Type": "echo"}
        none = http.post("/infer", json=BODY, headers=echo)
        assert none.status_code == 401 and none.json()["code"] == "UNAUTHENTICATED"
        wrong = http.post("/infer", json=BODY, headers={**echo, "Authorization": "Bearer sk-made-up"})
        assert wrong.status_code == 401
        assert http.post("/infer", json=BODY, headers={**echo, "X-Api-Key": ECHO_ONLY}).status_code == 200
        assert http.post("/infer", json=BODY, headers={**echo, "Authorization": f"Bearer {FULL}"}).status_code == 200
        # the echo-only key may not call anything else, on any path
        add = http.post("/v2/models/add/infer", json=BODY, headers={"X-Api-Key": ECHO_ONLY})
        assert add.status_code == 403 and add.json()["code"] == "PERMISSION_DENIED"
        assert "echo-team" in add.json()["error"]
        assert http.get("/registry").status_code == 401
        assert http.get("/lookup", params={"type": "add"}, headers={"X-Api-Key": ECHO_ONLY}).status_code == 403
        assert http.get("/health").status_code == 200  # probes stay open
        assert http.get("/v2/health/live").status_code == 200

    for key, error in (("sk-made-up", openai.AuthenticationError), (ECHO_ONLY, openai.PermissionDeniedError)):
        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            with pytest.raises(error) as caught:
                client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
            assert caught.value.body["message"]  # OpenAI's error shape
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="sk-made-up", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()

    wire = Wire(grpc_address)
    try:
        for metadata, code in (
            ([], grpc.StatusCode.UNAUTHENTICATED),
            ([("x-api-key", ECHO_ONLY)], grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.RpcError) as info:
                wire.stub.ModelInfer(request("add", a=[1], b=[2]), metadata=metadata, timeout=30)
            assert info.value.code() == code
        answer = wire.stub.ModelInfer(request("add", a=[1], b=[2]), metadata=[("authorization", f"Bearer {FULL}")])
        assert answer.outputs
    finally:
        wire.close()


def test_strangers_cannot_join_take_over_or_look_inside(cluster):
    url, _, replica = cluster
    stranger = {"Authorization": "Bearer not-the-token", "X-Anyserve-Replica-Key": "k"}
    hijack = {"replica_id": "x", "endpoint": "127.0.0.1:9", "capabilities": [{"type": "echo"}]}
    with httpx.Client(base_url=url, timeout=30, headers={"X-Api-Key": FULL}) as http:
        (victim,) = http.get("/registry").json()["replicas"]
        assert http.post("/register", json=hijack, headers=stranger).status_code == 401
        assert http.delete(f"/register/{victim['replica_id']}", headers=stranger).status_code == 401
        # a member (holding the cluster token) still cannot take the replica's id: it lacks the replica's key
        member = member_headers()
        taken = http.post("/register", json={**hijack, "replica_id": victim["replica_id"]}, headers=member)
        assert taken.status_code == 409
        assert http.delete(f"/register/{victim['replica_id']}", headers=member).status_code == 403
        assert http.get("/registry").json()["replicas"][0]["endpoint"] == replica.endpoint

    # the replica's status is for members only
    with grpc.insecure_channel(replica.endpoint) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(STATUS_METHOD)(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert replica_status(replica.endpoint)["replica_id"] == victim["replica_id"]  # with the token it finds

    # and its router link admits only the router (the cluster token in the link's hello)
    async def dial() -> None:
        with pytest.raises(Unauthenticated):
            await TcpTransport().connect(replica.link.partition("://")[2], timeout=5)

    asyncio.run(dial())
