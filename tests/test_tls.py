"""TLS on every hop, with a CA this test makes (trustme): the router's HTTPS and gRPC fronts,
the replica's gRPC port, registration, and the router link.

A request that reaches the replica went client -> router (HTTPS) -> replica
(the link, in TLS); the replica's status counts it as a link request.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from kserve import request
from processes import free_port

from anyserve.protocol import messages as pb
from anyserve.status_client import replica_status

ECHO = {"X-Capability-Type": "echo"}
BODY = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [7]}]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA and one certificate for 127.0.0.1/localhost (every process here uses it), as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    return {
        "ANYSERVE_TLS_CERT_FILE": str(folder / "cert.pem"),
        "ANYSERVE_TLS_KEY_FILE": str(folder / "key.pem"),
        "ANYSERVE_TLS_CA_FILE": str(folder / "ca.pem"),
    }


def test_every_hop_speaks_tls(start_router, start_replica, pki, monkeypatch):
    grpc_port = free_port()
    router = start_router("--grpc-port", str(grpc_port), **pki)
    ready = router.process.wait_for(" ready at ")
    url = router.url.replace("http://", "https://")
    assert f"ready at {url}" in ready
    replica = start_replica("echo_app:app", "--api-server", url, transport="inproc", **pki)
    trust = ssl.create_default_context(cafile=pki["ANYSERVE_TLS_CA_FILE"])

    with httpx.Client(base_url=url, verify=trust, timeout=30) as https:
        deadline = time.monotonic() + 30
        while not https.get("/health").json()["replicas"]:  # the replica registered over HTTPS
            assert time.monotonic() < deadline, "the replica did not register over HTTPS"
            time.sleep(0.05)
        answer = https.post("/infer", json=BODY, headers=ECHO)
        assert answer.status_code == 200, answer.text
    for monkey, value in pki.items():  # this process reads [tls] from the environment, as the CLI does
        monkeypatch.setenv(monkey, value)
    status = replica_status(replica.endpoint)
    assert status["link"].startswith("tcp://") and status["link_requests"] >= 1  # it came over the link, in TLS

    # plain HTTP and clients that do not trust the CA get nowhere
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{router.url}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/health", timeout=5)

    # the router's gRPC front and the replica's gRPC port: TLS only
    ca = Path(pki["ANYSERVE_TLS_CA_FILE"]).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    for address in (f"127.0.0.1:{grpc_port}", replica.endpoint):
        with grpc.secure_channel(address, credentials) as channel:
            stub = pb.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(request("echo", x=[1]), timeout=30).outputs
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            pb.GRPCInferenceServiceStub(channel).ModelInfer(request("echo", x=[1]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
