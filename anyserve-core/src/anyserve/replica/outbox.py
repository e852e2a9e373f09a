"""The bounded queue between a streaming handler and the transport that carries its responses.

A handler may produce faster than its reader (agent, router, client) takes
responses. Unbounded, a fast handler would pile its whole answer up in the
worker's memory and, on a core it shares with the agent and the router,
keep the CPU while its first response waits to be forwarded. The outbox
holds at most ``limit`` responses: a plain handler (in a thread) blocks in
``Stream.send`` while it is full; an ``async`` handler waits in
``await stream.drain()``, as with ``asyncio.StreamWriter``.

The reader's own pace reaches the outbox through the transport's stream
credit (see docs/protocol.md): the worker takes from the outbox only as
fast as the credit lets it send.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from anyserve.stream import closed as _closed

#: Responses a streaming handler may have sent that the transport has not taken yet.
OUTBOX_LIMIT = 8


class Outbox:
    """One streaming request's responses on their way to the transport.

    ``threaded`` outboxes are filled from a handler thread (``put`` blocks
    there); the others from the event loop (``put`` never blocks; ``room``
    waits). ``take`` and ``close`` run on the event loop.
    """

    def __init__(self, *, threaded: bool, limit: int = OUTBOX_LIMIT) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._limit = limit
        self._room = asyncio.Event()
        self._room.set()
        # A thread waits on a semaphore: an asyncio.Event cannot be awaited from a thread.
        self._slots = threading.Semaphore(limit) if threaded else None
        self.closed = False

    def put(self, item: Any) -> None:
        """Queue one response from the handler; raises ``Cancelled`` once closed."""
        if self.closed:
            raise _closed()
        if self._slots is None:
            self._queue.put_nowait(item)
            if self._queue.qsize() >= self._limit:
                self._room.clear()
            return
        # close() wakes a waiting thread; the timeout only guards against a loop that died without closing.
        while not self._slots.acquire(timeout=1.0):
            if self.closed or self._loop.is_closed():
                raise _closed()
        if self.closed:  # woken by close(), not by the reader
            raise _closed()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def finish(self, item: Any) -> None:
        """Queue the end marker or the handler's exception: never blocks, never refused."""
        self._queue.put_nowait(item)

    async def room(self) -> None:
        """Wait until the queue is below its limit; raises ``Cancelled`` once closed."""
        await self._room.wait()
        if self.closed:
            raise _closed()

    async def take(self) -> Any:
        """The next item; frees its place for the handler."""
        item = await self._queue.get()
        if self._slots is not None:
            self._slots.release()
        elif not self._room.is_set() and self._queue.qsize() <= self._limit // 2:
            # Waking the handler at half, not at every free place, wakes it once per few responses.
            self._room.set()
        return item

    def close(self) -> None:
        """The stream is over: wake a waiting handler, which then gets ``Cancelled``."""
        self.closed = True
        self._room.set()
        if self._slots is not None:
            self._slots.release(self._limit)
