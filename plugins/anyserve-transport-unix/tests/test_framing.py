"""Frames survive arbitrary read boundaries; oversize and broken frames are refused."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from anyserve_transport_unix import framing
from anyserve_transport_unix.frames_pb2 import Cancel, Chunk, Frame, Request, Response

Run = Callable[[Awaitable[Any]], Any]


def wire(buffers: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(b) for b in buffers)


@pytest.mark.parametrize(
    ("request_id", "field", "expected"),
    [
        (7, framing.REQUEST, Frame(id=7, request=Request(payload=b"abc", query={"type": "chat"}, stream=True))),
        (2**40, framing.RESPONSE, Frame(id=2**40, response=Response(payload=b"abc"))),
        (1, framing.CHUNK, Frame(id=1, chunk=Chunk(payload=b"abc"))),
    ],
)
def test_hand_encoding_is_an_ordinary_frame(request_id: int, field: int, expected: Frame) -> None:
    query = {"type": "chat"} if field == framing.REQUEST else None
    buffers = framing.encode_payload(request_id, field, b"abc", query, field == framing.REQUEST)
    data = wire(buffers)
    assert int.from_bytes(data[:4], "big") == len(data) - 4 == framing.frame_size(buffers)
    assert Frame.FromString(data[4:]) == expected


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70_000])
def test_payload_lengths_across_varint_boundaries(size: int) -> None:
    payload = os.urandom(size)
    frame = Frame.FromString(wire(framing.encode_payload(5, framing.RESPONSE, payload))[4:])
    assert frame.response.payload == payload


def test_payload_is_not_copied() -> None:
    payload = os.urandom(1 << 20)
    assert framing.encode_payload(1, framing.CHUNK, payload)[-1] is payload


def feed_in_pieces(reader: asyncio.StreamReader, data: bytes, step: int) -> None:
    loop = asyncio.get_running_loop()
    for i, start in enumerate(range(0, len(data), step)):
        loop.call_later(0.0005 * i, reader.feed_data, data[start : start + step])


def test_frames_split_at_every_byte(arun: Run) -> None:
    frames = [
        framing.encode(Frame(id=3, cancel=Cancel())),
        wire(framing.encode_payload(4, framing.CHUNK, b"x" * 300)),
        wire(framing.encode_payload(9, framing.REQUEST, b"", {"k": "v"})),
    ]

    async def main() -> list[Frame | None]:
        reader = asyncio.StreamReader()
        data = b"".join(frames)
        feed_in_pieces(reader, data, 1)
        asyncio.get_running_loop().call_later(0.0005 * len(data) + 0.01, reader.feed_eof)
        return [await framing.read(reader, 1 << 20) for _ in range(4)]

    got = arun(main())
    assert got[0] == Frame(id=3, cancel=Cancel())
    assert got[1].chunk.payload == b"x" * 300
    assert got[2].request.query == {"k": "v"} and got[2].request.payload == b""
    assert got[3] is None  # clean end between frames


def test_many_frames_in_one_read(arun: Run) -> None:
    async def main() -> list[int]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(wire(framing.encode_payload(i, framing.CHUNK, b"c")) for i in range(1, 101)))
        reader.feed_eof()
        ids = []
        while (frame := await framing.read(reader, 1024)) is not None:
            ids.append(frame.id)
        return ids

    assert arun(main()) == list(range(1, 101))


def test_oversize_frame_is_refused_before_its_body_arrives(arun: Run) -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data((1 << 30).to_bytes(4, "big"))  # header only: the body never comes
        with pytest.raises(framing.FrameTooLarge, match="1073741824 bytes exceeds max_frame_bytes=1024"):
            await framing.read(reader, 1024)

    arun(main())


@pytest.mark.parametrize("data", [b"\x00\x00", b"\x00\x00\x00\x10abc"])
def test_truncated_frame(arun: Run, data: bytes) -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await framing.read(reader, 1024)

    arun(main())


def test_garbage_body_is_a_protocol_error(arun: Run) -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x00\x00\x00\x03\xff\xff\xff")
        with pytest.raises(framing.ProtocolError, match="undecodable"):
            await framing.read(reader, 1024)

    arun(main())


class RecordingWriter:
    """Stands in for asyncio.StreamWriter; records each write() call."""

    def __init__(self) -> None:
        self.writes: list[bytes | memoryview] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | memoryview) -> None:
        self.writes.append(data)


def test_frame_writer_batches_small_frames_within_an_iteration(arun: Run) -> None:
    big = os.urandom(framing.BIG_PAYLOAD_BYTES)
    small = [wire(framing.encode_payload(i, framing.CHUNK, b"s")) for i in (1, 2, 3, 5)]
    big_frame = framing.encode_payload(4, framing.CHUNK, big)

    async def main() -> RecordingWriter:
        recorder = RecordingWriter()
        out = framing.FrameWriter(recorder)  # type: ignore[arg-type]
        out.send([small[0]])
        assert recorder.writes == [small[0]]  # the first frame goes out at once
        out.send([small[1]])
        assert len(recorder.writes) == 1  # later small ones wait for the end of the iteration
        out.send(big_frame)  # a big one goes at once, after what was queued
        assert recorder.writes[1:] == [small[1], big_frame[0], big]
        assert recorder.writes[-1] is big  # handed over as is, not joined
        out.send([small[2]])
        out.send([small[3]])
        assert len(recorder.writes) == 4
        await asyncio.sleep(0)
        return recorder

    writes = arun(main()).writes
    assert writes[-1] == small[2] + small[3]  # one write for the batch


def test_big_frames_wait_for_the_socket(arun: Run) -> None:
    payloads = [bytes([i]) * (1 << 20) for i in range(4)]

    async def main() -> None:
        left, right = socket.socketpair()
        _, writer = await asyncio.open_connection(sock=left)
        out = framing.FrameWriter(writer)
        sends = [
            asyncio.create_task(out.write(framing.encode_payload(i + 1, framing.CHUNK, p)))
            for i, p in enumerate(payloads)
        ]
        await asyncio.sleep(0.1)  # nobody reads yet
        # Only the first big frame was handed to the transport; the others wait in their tasks.
        assert writer.transport.get_write_buffer_size() <= len(payloads[0]) + 64
        assert sum(t.done() for t in sends) == 0
        reader, peer = await asyncio.open_connection(sock=right, limit=1 << 22)  # now start reading
        got = [await framing.read(reader, 1 << 21) for _ in payloads]
        await asyncio.wait_for(asyncio.gather(*sends), 5)
        assert sorted(f.chunk.payload for f in got) == sorted(payloads)
        writer.close()
        peer.close()

    arun(main())
