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

This file is the one place that walks every port; several rows are pinned
in more depth elsewhere, named in each row's comment (what it costs in
memory, the exact message, the timing), so here each is one cheap request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from kserve import Wire, request
from processes import Process, free_port, run_anyserve
from router_http import member_headers, wait_registered

from anyserve.config import load_settings
from anyserve.credentials import Credentials, link_hello
from anyserve.protocol import messages as pb
from anyserve.status_client import STATUS_METHOD, replica_status
from anyserve_transport_unix import TcpTransport, framing
from anyserve_transport_unix.frames_pb2 import Frame, Hello, Request

#: Every refusal must come within this (a busy 2-core machine; the router's ticks are at most a second).
QUICK = 5.0
#: The router's body timeout here: a body announced and not sent is 408 this soon, not at the default 60 s.
BODY_TIMEOUT = 1.0
CONFIG = f"""
[router]
body_timeout_seconds = {BODY_TIMEOUT}
body_min_bytes_per_second = 1024
"""
ECHO_JSON = b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [7]}]}'


@dataclass
class Ports:
    """The four public ports of a one-replica cluster, and the silent link connections opened at its start."""

    router_url: str
    router_grpc: str
    replica_grpc: str
    link: str
    #: (opened at, socket): a link connection that never says hello, one that sends half a frame header.
    silent_links: list[tuple[float, socket.socket]] = field(default_factory=list)


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    config = tmp_path_factory.mktemp("hostile") / "anyserve.toml"
    config.write_text(CONFIG)
    started: list[Process] = []
    silent: list[tuple[float, socket.socket]] = []
    try:
        port, grpc_port, replica_port = free_port(), free_port(), free_port()
        router = run_anyserve("router", "--port", str(port), "--grpc-port", str(grpc_port), "--config", str(config))
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica = run_anyserve(
            "start", "--app", "echo_app:app", "--port", str(replica_port), "--transport", "unix",
            "--api-server", url, "--replica-id", "hostile-1",
        )  # fmt: skip
        started.append(replica)
        link = re.search(r"router link tcp://(\S+)\)", replica.wait_for(" ready at "))
        assert link is not None, "the replica serves no router link"
        wait_registered(url, 1)
        # The link's handshake timeout is fixed at 10 s: these run alongside the other tests, checked by the last.
        for first_bytes in (b"", b"\x00\x00"):
            sock = socket.create_connection(_host_port(link.group(1)), timeout=QUICK)
            sock.sendall(first_bytes)
            silent.append((time.monotonic(), sock))
        yield Ports(url, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{replica_port}", link.group(1), silent)
    finally:
        for _, sock in silent:
            sock.close()
        for process in started:
            process.kill_group()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


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
    host, port = _host_port(ports.router_url.removeprefix("http://"))
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


def _bomb() -> pb.ModelInferRequest:
    bomb = pb.ModelInferRequest(model_name="add", id="bomb")
    bomb.inputs.add(name="a", datatype="INT64", shape=[10_000_000, 0])
    bomb.inputs.add(name="b", datatype="INT64", shape=[0])
    return bomb


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
    ("shape bomb [10000000, 0]", lambda w: w.stub.ModelInfer(_bomb(), timeout=QUICK),
     {grpc.StatusCode.INVALID_ARGUMENT}),
    ("shape bomb routed by metadata",
     lambda w: w.stub.ModelInfer(_bomb(), metadata=[("x-capability-type", "add")], timeout=QUICK),
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
    with socket.create_connection(_host_port(getattr(ports, port)), timeout=QUICK) as sock:
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


# -- the replica's router link ----------------------------------------------------------------------------------


def _frame(frame: Frame) -> bytes:
    return framing.encode(frame)


def _hello(version: int = framing.PROTOCOL_VERSION, json_text: str = "{}") -> bytes:
    return _frame(Frame(hello=Hello(version=version, json=json_text)))


def _refusal(address: str, raw: bytes, timeout: float = QUICK) -> tuple[Frame | None, float]:
    """Send ``raw`` to the link, read what comes back until it closes: (the error frame, seconds to close)."""
    with socket.create_connection(_host_port(address), timeout=timeout) as sock:
        began = time.monotonic()
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        data = _until_closed(sock, timeout)
        took = time.monotonic() - began
    return _first_frame(data), took


def _until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the link kept the connection open for {timeout}s; it sent {data[:200]!r}") from None
    return data


def _first_frame(data: bytes) -> Frame | None:
    if len(data) < framing.HEADER.size:
        return None
    (size,) = framing.HEADER.unpack(data[: framing.HEADER.size])
    return Frame.FromString(data[framing.HEADER.size : framing.HEADER.size + size])


def _token() -> str:
    token = Credentials.load(load_settings()).cluster
    assert token, "the session has no cluster token"
    return token


LINK_ROWS: list[tuple[str, bytes | Callable[[], bytes], set[str]]] = [
    # Read as a frame header, "GET " announces a 1.2 GB frame: refused before any of it is read.
    ("bytes that are not frames", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", {"RESOURCE_EXHAUSTED"}),
    ("a frame header announcing 250 MB", framing.HEADER.pack(250 * 1024 * 1024), {"RESOURCE_EXHAUSTED"}),
    ("a request before any hello",
     lambda: _frame(Frame(id=1, request=Request(payload=request("echo").SerializeToString(),
                                                query={"x-capability-type": "echo"}))),
     {"INVALID_ARGUMENT"}),
    # In depth, with the router's own link client: tests/test_auth.py.
    ("a hello without the token", lambda: _hello(), {"UNAUTHENTICATED"}),
    ("a hello with another token", lambda: _hello(json_text=json.dumps({"token": "not-the-token"})),
     {"UNAUTHENTICATED"}),
    ("a hello with a token of the wrong type", lambda: _hello(json_text='{"token": ["x"]}'), {"UNAUTHENTICATED"}),
    ("a hello that is not JSON", lambda: _hello(json_text="{token"), {"INVALID_ARGUMENT"}),
    ("a hello of another protocol version", lambda: _hello(version=999, json_text=json.dumps({"token": _token()})),
     {"FAILED_PRECONDITION"}),
    # Its first kilobyte only: refused from the header, with nothing left unread (which would reset the connection).
    ("a hello past 64 KiB", lambda: _hello(json_text=json.dumps({"token": _token(), "pad": "x" * 70_000}))[:1024],
     {"RESOURCE_EXHAUSTED"}),
]  # fmt: skip


async def _link_serves(address: str) -> bytes:
    """A good request over the link, as the router sends one: the hello with the token, then a request frame."""
    connection = await TcpTransport().connect(address, timeout=QUICK, hello=link_hello(_token()))
    try:
        return await asyncio.wait_for(
            connection.infer(request("echo", x=[7]).SerializeToString(), {"x-capability-type": "echo"}), QUICK
        )
    finally:
        await connection.close()


@pytest.mark.parametrize(("raw", "codes"), [pytest.param(r, c, id=i) for i, r, c in LINK_ROWS])
def test_the_link_refuses_strangers_and_bad_frames_then_closes_and_serves_on(
    ports: Ports, raw: bytes | Callable[[], bytes], codes: set[str]
) -> None:
    error, took = _refusal(ports.link, raw if isinstance(raw, bytes) else raw())
    print(f"{error.error.code if error else None} in {took:.2f}s: {error.error.message[:160] if error else ''}")
    assert error is not None and error.WhichOneof("kind") == "error", "closed without saying why"
    assert error.error.code in codes, error.error.message
    assert took < QUICK
    answer = pb.ModelInferResponse.FromString(asyncio.run(_link_serves(ports.link)))
    assert answer.outputs[0].name == "output_x"


def test_an_undecodable_first_frame_on_the_link_is_invalid_argument(ports: Ports) -> None:
    error, took = _refusal(ports.link, framing.HEADER.pack(6) + b"\xff\xff\xff\xff\xff\xff")
    assert error is not None and took < QUICK  # this much holds: refused and closed at once
    assert asyncio.run(_link_serves(ports.link))
    assert error.error.code == "INVALID_ARGUMENT", error.error.message


def test_a_replica_link_member_sending_a_shape_bomb_gets_invalid_argument(ports: Ports) -> None:
    """Even the router, which holds the token, cannot make a replica build ten million empty rows."""

    async def bomb() -> None:
        connection = await TcpTransport().connect(ports.link, timeout=QUICK, hello=link_hello(_token()))
        try:
            with pytest.raises(Exception) as info:
                await asyncio.wait_for(
                    connection.infer(_bomb().SerializeToString(), {"x-capability-type": "add"}), QUICK
                )
            assert getattr(info.value, "code", None) == "INVALID_ARGUMENT", repr(info.value)
        finally:
            await connection.close()

    asyncio.run(bomb())
    assert asyncio.run(_link_serves(ports.link))


def test_silent_link_connections_are_closed_at_the_handshake_timeout(ports: Ports) -> None:
    """Opened when the cluster started (nothing sent; half a frame header): each closed 10 s later, not kept."""
    for opened, sock in ports.silent_links:
        left = opened + framing.HANDSHAKE_TIMEOUT_S + QUICK - time.monotonic()
        data = _until_closed(sock, max(left, 0.1))
        closed_after = time.monotonic() - opened
        error = _first_frame(data)
        print(f"closed after {closed_after:.1f}s: {error.error.code if error else None}")
        assert framing.HANDSHAKE_TIMEOUT_S - 1 <= closed_after < framing.HANDSHAKE_TIMEOUT_S + QUICK
        assert error is not None and error.error.code == "DEADLINE_EXCEEDED"
    assert replica_status(ports.replica_grpc)["replica_id"] == "hostile-1"
    assert asyncio.run(_link_serves(ports.link))
