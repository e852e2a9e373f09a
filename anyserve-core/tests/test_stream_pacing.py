"""A streaming handler is paced by its reader: it stays a few responses ahead, then waits.

These drive a real ``WorkerHost`` (the worker side of every transport) with
a reader that stalls; no transport is involved because pacing is the
worker's, whatever carries the responses.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from anyserve import AnyServe, ModelInferRequest
from anyserve.builtins.subset import SubsetMatcher
from anyserve.errors import Cancelled
from anyserve.replica.outbox import OUTBOX_LIMIT
from anyserve.replica.worker import WorkerHost

TOTAL = OUTBOX_LIMIT * 10
QUERY = {"type": "tokens"}
PAYLOAD = ModelInferRequest(model_name="tokens", id="r1").SerializeToString()


class Produced:
    """What a handler managed to send, and how it ended."""

    def __init__(self) -> None:
        self.sent = 0
        self.ended: BaseException | None = None
        self.done = threading.Event()


def build(asynchronous: bool) -> tuple[WorkerHost, Produced]:
    app = AnyServe("pacing")
    produced = Produced()

    if asynchronous:

        @app.capability(type="tokens", stream=True)
        async def tokens(request, context, stream):
            try:
                for i in range(TOTAL):
                    stream.send_text(f"t{i}")
                    produced.sent += 1
                    await stream.drain()
            except BaseException as exc:
                produced.ended = exc
                raise
            finally:
                produced.done.set()

    else:

        @app.capability(type="tokens", stream=True)
        def tokens(request, context, stream):
            try:
                for i in range(TOTAL):
                    stream.send_text(f"t{i}")
                    produced.sent += 1
            except BaseException as exc:
                produced.ended = exc
                raise
            finally:
                produced.done.set()

    return WorkerHost(app, SubsetMatcher()), produced


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
def test_a_stalled_reader_stops_the_handler_and_leaving_cancels_it(asynchronous: bool) -> None:
    host, produced = build(asynchronous)

    async def main() -> None:
        chunks = host.stream(PAYLOAD, QUERY)
        assert await anext(chunks)
        await asyncio.sleep(0.3)  # the reader stalls: the handler must wait, not run to the end
        assert OUTBOX_LIMIT <= produced.sent <= OUTBOX_LIMIT + 2
        assert not produced.done.is_set()
        await chunks.aclose()  # the reader leaves: the waiting handler is told so
        assert await asyncio.to_thread(produced.done.wait, 5)
        assert isinstance(produced.ended, Cancelled | asyncio.CancelledError)
        assert produced.sent < TOTAL

    try:
        asyncio.run(main())
    finally:
        host.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
def test_a_reader_that_keeps_reading_gets_every_response_in_order(asynchronous: bool) -> None:
    host, produced = build(asynchronous)

    async def main() -> list[bytes]:
        return [chunk async for chunk in host.stream(PAYLOAD, QUERY)]

    try:
        chunks = asyncio.run(main())
    finally:
        host.close()
    assert len(chunks) == TOTAL == produced.sent
    assert produced.ended is None
    assert b"t0" in chunks[0] and f"t{TOTAL - 1}".encode() in chunks[-1]
