"""Every public port against a table of hostile inputs: refused clearly and quickly, and still serving after.

One router (HTTP and ``--grpc-port``) and one replica (unix workers, router
link on) that registered itself, as a user starts them. Each port gets a
table of inputs a careless or malicious caller may send: bytes that are not
the protocol, a size announced and never sent, headers past their limit,
numbers JSON cannot hold, tensors whose shape alone would cost gigabytes,
frames on the link from someone without the cluster token. For each row the
answer must be a client error in the port's own terms (an HTTP 4xx with a
JSON ``{"error", "code"}`` body, a gRPC ``INVALID_ARGUMENT`` /
``RESOURCE_EXHAUSTED`` / ``UNAUTHENTICATED`` / ``UNIMPLEMENTED``, a link error
frame and a closed connection), within a few seconds: never a hang, never a
500, and the same port then serves a good request.

This file (router HTTP, router and replica gRPC) and test_hostile_link.py
(the router link) are the one place that walks every port; several rows are
pinned in more depth elsewhere, named in each row's comment (what it costs
in memory, the exact message, the timing), so here each is one cheap request.
The cluster is tests/hostile_cluster.py's, one per test worker.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from hostile_cluster import BODY_TIMEOUT, ECHO_JSON, QUICK, Ports, host_port, shape_bomb
from kserve import Wire, request
from router_http import member_headers

from anyserve.protocol import messages as pb
from anyserve.status_client import STATUS_METHOD

# -- router HTTP ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One HTTP answer read off a raw socket, and whether the router closed the connection after it."""

    status: int
    headers: dict[str, str]
    body: bytes
    took: float
    closed: bool

    def json(self) -> Any:
        return json.loads(self.body)


def _read_answer(sock: socket.socket, began: float, timeout: float) -> Answer:
    """Status, headers and a Content-Length body; then a short look for the connection's close."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no answer within {timeout}s; got {data[:200]!r}") from None
        if not chunk:
            raise AssertionError(f"connection closed without an answer; got {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed inside the body; got {body[:200]!r}"
        body += chunk
    took = time.monotonic() - began
    closed = False
    if headers.get("connection", "").lower() == "close":
        sock.settimeout(QUICK)
        try:
            while sock.recv(65536):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    return Answer(status, headers, body[:length], took, closed)


def _post(path: str, body: bytes, *, length: int | None = None, extra: bytes = b"") -> bytes:
    """A POST as raw bytes: ``length`` may announce more than ``body`` holds, ``extra`` adds raw header lines."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Capability-Type: echo\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


def _tensor(datatype: str, shape: str, data: str) -> bytes:
    return f'{{"inputs": [{{"name": "a", "datatype": "{datatype}", "shape": {shape}, "data": {data}}}]}}'.encode()


@dataclass
class HttpRow:
    """A raw request, the status it must get, and whether the router must close the connection after it."""

    id: str
    raw: bytes
    #: The status, or the statuses either of which is right.
    status: int | frozenset[int]
    close: bool = False
    #: The row is answered at the router's body timeout, not at once.
    wait: float = 0.0
    #: uvicorn's own refusal of bytes that are not HTTP/1.1: plain text, then closed; every other is JSON.
    plain: bool = False


HTTP_ROWS = [
    # Bodies (in depth, with messages: tests/test_router_failures.py BAD_BODIES; anyserve-core test_strict_json).
    HttpRow("malformed JSON", _post("/infer", b'{"inputs": ['), 400),
    HttpRow("inputs of the wrong type", _post("/infer", b'{"inputs": "x"}'), 400),
    HttpRow(
        "a tensor name of the wrong type", _post("/infer", _tensor("INT64", "[1]", "[1]").replace(b'"a"', b"1")), 400
    ),
    HttpRow("shape of the wrong type", _post("/infer", _tensor("INT64", '"1"', "[1]")), 400),
    HttpRow("a body that is not UTF-8", _post("/infer", b'{"inputs": ["\xff\xfe"]}'), 400),
    # Numbers JSON cannot hold exactly (anyserve-core/tests/test_strict_json.py).
    HttpRow("NaN", _post("/infer", _tensor("FP64", "[1]", "[NaN]")), 400),
    HttpRow("Infinity", _post("/infer", _tensor("FP64", "[1]", "[Infinity]")), 400),
    HttpRow("-Infinity in parameters", _post("/infer", b'{"inputs": [], "parameters": {"p": -Infinity}}'), 400),
    HttpRow("a 5,000-digit integer", _post("/infer", _tensor("INT64", "[1]", "[" + "7" * 5000 + "]")), 400),
    HttpRow("a 5,000-digit shape", _post("/infer", _tensor("INT64", "[" + "9" * 5000 + "]", "[]")), 400),
    # Shape bombs: refused from the shape alone (anyserve-core/tests/test_tensor_bounds.py; replica side:
    # tests/test_replica_tensor_bounds.py).
    HttpRow("shape bomb [10000000, 0]", _post("/infer", _tensor("INT64", "[10000000, 0]", "[]")), 400),
    HttpRow("shape bomb of 2^62 elements", _post("/infer", _tensor("INT8", "[2147483648, 2147483648]", "[1]")), 400),
    HttpRow("33 dimensions", _post("/infer", _tensor("INT64", "[" + ", ".join(["1"] * 33) + "]", "[1]")), 400),
    HttpRow(
        "Inference-Header-Content-Length past 18 digits",
        _post("/infer", b"{}", extra=b"Inference-Header-Content-Length: " + b"9" * 30 + b"\r\n"),
        400,
    ),
    # Sizes announced and not sent (in depth: tests/test_router_limits.py, tests/test_router_failures.py).
    HttpRow("Content-Length of 10 GB, 14 bytes sent", _post("/infer", b'{"inputs": [],', length=10**10), 413),
    HttpRow(
        "Content-Length of 1 MB, 14 bytes sent",
        _post("/infer", b'{"inputs": [],', length=10**6),
        408,
        close=True,
        wait=BODY_TIMEOUT,
    ),
    HttpRow("a 70 KiB header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, True),
    # Headers that are not ASCII: they would travel on as gRPC metadata.
    HttpRow("X-Capability-Type not UTF-8", _post("/infer", ECHO_JSON).replace(b": echo", b": \xff\xfe"), 400),
    HttpRow("X-Request-Timeout not UTF-8", _post("/infer", ECHO_JSON, extra=b"X-Request-Timeout: \xc3\x28\r\n"), 400),
    HttpRow("X-Request-Timeout NaN", _post("/infer", ECHO_JSON, extra=b"X-Request-Timeout: nan\r\n"), 400),
    # An X-Request-Id that is not printable ASCII is refused, or replaced by one the router makes (docs/security.md).
    HttpRow(
        "X-Request-Id not UTF-8",
        _post("/infer", ECHO_JSON, extra=b"X-Request-Id: \xff\xfe\r\n"),
        frozenset({200, 400}),
    ),
    # Paths and methods nobody serves.
    HttpRow("an unknown path", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    HttpRow("a path of 8,000 characters", b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    HttpRow("DELETE /infer", b"DELETE /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    HttpRow("an unknown method", b"BREW /infer HTTP/1.1\r\nHost: x\r\n\r\n", 400, True, plain=True),
    HttpRow("bytes that are not HTTP", b"\x00\x01\x02\x16\x03\x01 garbage\r\n\r\n", 400, True, plain=True),
    HttpRow(
        "Content-Length and chunked together",
        b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        True,
        plain=True,
    ),
    HttpRow(
        "a chunk size that is not hex",
        b"POST /infer HTTP/1.1\r\nHost: x\r\nX-Capability-Type: echo\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        True,
        plain=True,
    ),
]


@pytest.mark.parametrize("row", HTTP_ROWS, ids=[row.id for row in HTTP_ROWS])
def test_router_http_refuses_hostile_requests_and_serves_on(ports: Ports, row: HttpRow) -> None:
    host, port = host_port(ports.router_url.removeprefix("http://"))
    with socket.create_connection((host, port), timeout=QUICK) as sock:
        began = time.monotonic()
        with contextlib.suppress(OSError):  # a refusal may close the connection before all of it is sent
            sock.sendall(row.raw)
        answer = _read_answer(sock, began, timeout=row.wait + QUICK)
    print(f"{row.id}: {answer.status} in {answer.took:.2f}s {answer.body[:160]!r}")
    assert answer.status in (row.status if isinstance(row.status, frozenset) else {row.status}), answer.body[:300]
    assert answer.took < row.wait + QUICK
    if row.plain:
        assert answer.headers.get("connection") == "close"
    elif answer.status >= 400:
        body = answer.json()
        assert isinstance(body.get("error"), str) and body["error"] and isinstance(body.get("code"), str), body
        assert "Traceback" not in body["error"] and "/" not in body["code"]
    if row.close:
        assert answer.closed, "the router kept the connection open after refusing it"
    if answer.status == 200:
        assert answer.headers["x-request-id"].isascii() and answer.headers["x-request-id"].isprintable()
    good = httpx.post(
        f"{ports.router_url}/infer",
        content=ECHO_JSON,
        headers={**member_headers(), "X-Capability-Type": "echo"},
        timeout=QUICK,
    )
    assert good.status_code == 200, good.text


# -- router gRPC and replica gRPC -------------------------------------------------------------------------------


def _mismatch() -> pb.ModelInferRequest:
    """A shape of a billion elements over eight bytes of raw contents."""
    lie = pb.ModelInferRequest(model_name="echo", id="lie")
    lie.inputs.add(name="a", datatype="INT64", shape=[1_000_000_000])
    lie.raw_input_contents.append(b"\x00" * 8)
    return lie


def _status_without_token(wire: Wire) -> object:
    return wire.channel.unary_unary(STATUS_METHOD)(b"", timeout=QUICK)


GrpcCall = Callable[[Wire], object]

#: (id, call, the codes it may end with): both gRPC ports get every row.
GRPC_ROWS: list[tuple[str, GrpcCall, set[grpc.StatusCode]]] = [
    ("garbage bytes as a ModelInferRequest", lambda w: w.raw_infer(b"\xff\xff\xff\xffgarbage", timeout=QUICK),
     {grpc.StatusCode.INVALID_ARGUMENT}),
    ("garbage bytes, routed by metadata",
     lambda w: w.raw_infer(b"\x0a\xff\xff\xff\xff\x0f", metadata=[("x-capability-type", "echo")], timeout=QUICK),
     {grpc.StatusCode.INVALID_ARGUMENT}),
    # In depth against a replica: tests/test_replica_tensor_bounds.py.
    ("shape bomb [10000000, 0]", lambda w: w.stub.ModelInfer(shape_bomb(), timeout=QUICK),
     {grpc.StatusCode.INVALID_ARGUMENT}),
    ("shape bomb routed by metadata",
     lambda w: w.stub.ModelInfer(shape_bomb(), metadata=[("x-capability-type", "add")], timeout=QUICK),
     {grpc.StatusCode.INVALID_ARGUMENT}),
    ("a billion elements over 8 bytes", lambda w: w.stub.ModelInfer(_mismatch(), timeout=QUICK),
     {grpc.StatusCode.INVALID_ARGUMENT}),
    ("100 KB of metadata",
     lambda w: w.stub.ModelInfer(request("echo"), metadata=[("x-pad", "x" * 100_000)], timeout=QUICK),
     {grpc.StatusCode.RESOURCE_EXHAUSTED}),
    ("a 20,000-character capability",
     lambda w: w.stub.ModelInfer(request(), metadata=[("x-capability-type", "e" * 20_000)], timeout=QUICK),
     {grpc.StatusCode.RESOURCE_EXHAUSTED}),
    ("an unknown method", lambda w: w.channel.unary_unary("/inference.GRPCInferenceService/Nope")(b"", timeout=QUICK),
     {grpc.StatusCode.UNIMPLEMENTED}),
]  # fmt: skip
#: The replica's status names pids and sockets: members only (in depth: tests/test_auth.py).
REPLICA_ONLY_ROWS: list[tuple[str, GrpcCall, set[grpc.StatusCode]]] = [
    ("status without the cluster token", _status_without_token, {grpc.StatusCode.UNAUTHENTICATED}),
]


def _grpc_cases() -> list[Any]:
    cases = []
    for port in ("router_grpc", "replica_grpc"):
        rows = GRPC_ROWS + (REPLICA_ONLY_ROWS if port == "replica_grpc" else [])
        cases += [pytest.param(port, call, codes, id=f"{port}-{name}") for name, call, codes in rows]
    return cases


@pytest.mark.parametrize(("port", "call", "codes"), _grpc_cases())
def test_grpc_ports_refuse_hostile_calls_and_serve_on(
    ports: Ports, port: str, call: GrpcCall, codes: set[grpc.StatusCode]
) -> None:
    wire = Wire(getattr(ports, port))
    try:
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            call(wire)
        took = time.monotonic() - began
        print(f"{info.value.code().name} in {took:.2f}s: {info.value.details()[:160]}")
        assert info.value.code() in codes, info.value.details()
        assert took < QUICK
        answer = wire.stub.ModelInfer(request("echo", x=[7]), timeout=QUICK)
        assert [t.name for t in answer.outputs][:1] == ["output_x"]
    finally:
        wire.close()


@pytest.mark.parametrize("port", ["router_grpc", "replica_grpc"])
def test_grpc_streams_answer_garbage_with_an_error_in_the_stream(ports: Ports, port: str) -> None:
    """As Triton does, a stream's errors stay in the stream: one error response per garbage message, then the end."""
    wire = Wire(getattr(ports, port))
    try:
        began = time.monotonic()
        open_stream = wire.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        raw = list(open_stream(iter([b"\xff\xff\xff\xff", b"\x0a\xff"]), timeout=QUICK))
        assert time.monotonic() - began < QUICK
        errors = [pb.ModelStreamInferResponse.FromString(r).error_message for r in raw]
        print(errors)
        assert errors and all(e.startswith("INVALID_ARGUMENT: ") for e in errors), errors
        assert wire.stub.ModelInfer(request("echo", x=[7]), timeout=QUICK).outputs
    finally:
        wire.close()


@pytest.mark.parametrize("port", ["router_grpc", "replica_grpc"])
def test_grpc_ports_close_connections_that_do_not_speak_http2(ports: Ports, port: str) -> None:
    """An HTTP/1.1 request on a gRPC port: the server says goodbye in HTTP/2 and closes, at once."""
    with socket.create_connection(host_port(getattr(ports, port)), timeout=QUICK) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        began = time.monotonic()
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
        assert time.monotonic() - began < QUICK
    assert b"HTTP/1.1 200" not in data
    wire = Wire(getattr(ports, port))
    try:
        assert wire.stub.ModelInfer(request("echo", x=[7]), timeout=QUICK).outputs
    finally:
        wire.close()
