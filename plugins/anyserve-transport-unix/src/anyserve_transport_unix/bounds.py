"""What one served side (a worker, or a replica's router link) lets its callers hold, all connections together.

Two bounds, shared by every session of one server:

* **request bytes in flight**: the payloads of the requests being served.
  A request frame past the budget is answered ``RESOURCE_EXHAUSTED`` at once
  and not run, so callers that pile up big requests cannot grow the process
  without bound (each connection reads one frame at a time, so what is
  being read is bounded by ``max_frame_bytes`` per connection).
* **a partial frame's time**: a connection that has sent a frame's header
  but not its body within ``frame_timeout`` is closed: a stalled sender
  cannot hold the buffer it made the server allocate.

Neither sets a timer per frame: a session notes when it starts waiting for
a body, and one sweep per server closes those overdue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_FRAME_TIMEOUT_S = 30.0


class Closable(Protocol):
    def abort(self, reason: str) -> None: ...


@dataclass(eq=False)
class Bounds:
    """The limits of one server and what its sessions hold now."""

    #: Request payload bytes all sessions may hold at once.
    max_bytes_in_flight: int
    #: Seconds a frame's body may take to arrive once its header has.
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT_S
    used: int = 0
    #: Sessions waiting for a frame's body, and since when (loop time).
    partial: dict[Closable, float] = field(default_factory=dict)

    def take(self, size: int) -> bool:
        """Count ``size`` request bytes in, or False when that would pass the budget."""
        if self.used + size > self.max_bytes_in_flight:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)

    async def sweep(self, where: str) -> None:
        """Close the sessions whose partial frame is older than ``frame_timeout``, until cancelled."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.frame_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            deadline = loop.time() - self.frame_timeout
            for session, since in list(self.partial.items()):
                if since < deadline:
                    log.warning("%s: closing a connection stalled for %.0fs inside a frame", where, self.frame_timeout)
                    self.partial.pop(session, None)
                    session.abort(f"no whole frame within {self.frame_timeout:g}s")
