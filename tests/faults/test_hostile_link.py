"""The replica's router link against hostile input: strangers, bad frames, silence (see test_hostile_inputs.py).

The link admits a caller on its hello (the cluster token, within 10 s and
64 KiB) before reading anything else; each row must be an error frame and a
closed connection within seconds, and the link must serve the router after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable

import pytest
from hostile_cluster import QUICK, Ports, host_port, shape_bomb
from kserve import request

from anyserve.config import load_settings
from anyserve.credentials import Credentials, link_hello
from anyserve.protocol import messages as pb
from anyserve.status_client import replica_status
from anyserve_transport_unix import TcpTransport, framing
from anyserve_transport_unix.frames_pb2 import Frame, Hello, Request


def _frame(frame: Frame) -> bytes:
    return framing.encode(frame)


def _hello(version: int = framing.PROTOCOL_VERSION, json_text: str = "{}") -> bytes:
    return _frame(Frame(hello=Hello(version=version, json=json_text)))


def _refusal(address: str, raw: bytes, timeout: float = QUICK) -> tuple[Frame | None, float]:
    """Send ``raw`` to the link, read what comes back until it closes: (the error frame, seconds to close)."""
    with socket.create_connection(host_port(address), timeout=timeout) as sock:
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
                    connection.infer(shape_bomb().SerializeToString(), {"x-capability-type": "add"}), QUICK
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
