"""Every routed call's deadline, and its HTTP client leaving, kept by one ticker instead of a timer each.

A request's deadline bounds its routing: the wait for capacity, then the
replica's answer (unary) or its first response (a stream). It is the
client's own (``X-Request-Timeout``, gRPC's deadline, the OpenAI SDK's
``X-Stainless-Read-Timeout``), else ``router.default_deadline_seconds``.

Most calls end within milliseconds, so neither a timer nor a watcher task
per call pays for itself on the hot path (either costs about as much as
the rest of the routing). A call is instead one small object in a set; one
task wakes every :data:`TICK` while calls are out, cancels those past their
deadline (answered 504), and gives the HTTP calls that have lived through
two ticks a task that waits for their client to disconnect (that call is
then cancelled as well, which cancels it on the replica and in its
worker). A deadline is therefore kept to within a tick, and a client that
leaves is noticed within two.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.types import Receive

from anyserve.errors import AnyServeError
from anyserve_router.inbound import ClientGone

#: Seconds between two looks at the calls out.
TICK = 0.05
#: Ticks a call lives through before its client gets watched.
WATCH_AFTER_TICKS = 2

T = TypeVar("T")

_DEADLINE = "deadline"
_GONE = "gone"


class Call:
    """One call under watch: its task, its deadline and, over HTTP, how to hear its client leave."""

    __slots__ = ("deadline", "receive", "task", "ticks", "watcher", "why")

    def __init__(self, task: asyncio.Task[object], deadline: float, receive: Receive | None) -> None:
        self.task = task
        self.deadline = deadline
        self.receive = receive
        self.ticks = 0
        self.watcher: asyncio.Task[None] | None = None
        #: Why the call was cancelled by the watch (``None``: it was not).
        self.why: str | None = None

    def failure(self, late: Callable[[], AnyServeError]) -> AnyServeError | None:
        """What a call the watch cancelled raises instead (``late()`` for its deadline); ``None`` if it did not."""
        if self.why is None or self.task.uncancel() > 0:  # not ours, or cancelled for another reason as well
            return None
        if self.why == _DEADLINE:
            return late()
        return ClientGone("the client disconnected; the request was cancelled")


class Deadlines:
    """The calls out of one router, watched by a single ticking task while there are any."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._calls: set[Call] = set()
        self._ticker: asyncio.Task[None] | None = None
        #: The loop of the last call watched: asking for the running loop costs a system call per request on
        #: Python 3.11 (its fork check calls getpid()), a loop given by the caller none.
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._calls)

    def watch(self, deadline: float, receive: Receive | None = None) -> Call:
        """Start watching the current task's call; :meth:`done` must follow, in a ``finally``."""
        loop = self._loop
        task = None if loop is None else asyncio.current_task(loop)
        if task is None:  # the first call, or one on another loop than the last (an app reused across loops)
            loop = self._loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
        assert task is not None
        call = Call(task, deadline, receive)
        self._calls.add(call)
        if self._ticker is None or self._ticker.done():
            self._ticker = loop.create_task(self._tick(), name="anyserve-router-deadlines")
        return call

    async def run(
        self, work: Awaitable[T], deadline: float, receive: Receive | None, late: Callable[[], AnyServeError]
    ) -> T:
        """``await work`` under ``deadline`` (``late()`` is raised past it) and, with ``receive``, its client."""
        call = self.watch(deadline, receive)
        try:
            return await work
        except asyncio.CancelledError:
            failure = call.failure(late)
            if failure is None:
                raise
            raise failure from None
        finally:
            self.done(call)

    def done(self, call: Call) -> None:
        self._calls.discard(call)
        if call.watcher is not None:
            call.watcher.cancel()

    async def _tick(self) -> None:
        try:
            while self._calls:
                await asyncio.sleep(self.tick)
                now = time.monotonic()
                for call in list(self._calls):
                    if call.why is not None:
                        continue
                    if now >= call.deadline:
                        call.why = _DEADLINE
                        call.task.cancel()
                    elif call.receive is not None and call.watcher is None:
                        call.ticks += 1
                        if call.ticks >= WATCH_AFTER_TICKS:
                            call.watcher = asyncio.get_running_loop().create_task(_watch_client(call, call.receive))
        finally:
            self._ticker = None


async def _watch_client(call: Call, receive: Receive) -> None:
    """Cancel ``call`` once its HTTP client disconnects (its body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if call.why is None:
        call.why = _GONE
        call.task.cancel()
