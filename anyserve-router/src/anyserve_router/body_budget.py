"""The request bodies the router holds at once, all requests together (``router.max_body_bytes_in_flight``).

``router.max_body_bytes`` bounds one body; without this, eight 60 MB bodies
at once are half a gigabyte of bytes, and more once parsed. A request's
share is taken before its body is read (by its Content-Length when it has
one, else chunk by chunk as it arrives) and given back when the request is
done, whatever its outcome: a request that does not fit is answered 503
with Retry-After before its body costs anything, and nothing is held after.

Each request gets a :class:`Ticket` in its scope (scopes are copied on the
way to some fronts; the ticket object is shared by the copies). Everything
runs on the event loop, so plain integers suffice.

Given back is not yet returned: glibc's allocator keeps the pages of big
freed buffers for reuse, so after a burst of large bodies the router would
keep hundreds of megabytes it no longer uses. Once nothing is held and at
least :data:`TRIM_AFTER` bytes passed since the last time, the allocator is
asked to return its free pages (``malloc_trim``, a few milliseconds).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

from anyserve_router.errors import BodyTooLarge, RouterBusy

SETTING = "router.max_body_bytes_in_flight"
#: Where a request's ticket is kept in its ASGI scope.
TICKET_SCOPE = "anyserve.body_ticket"
#: Body bytes taken since the allocator last returned free memory, past which it is asked to again.
TRIM_AFTER = 32 * 1024 * 1024


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or ``None`` where there is no such function (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_TRIM = _malloc_trim()


class BodyBudget:
    """Bytes of request bodies in flight, against a limit."""

    __slots__ = ("held", "limit", "peak", "since_trim")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        #: The most ever held at once, for tests and diagnosis.
        self.peak = 0
        self.since_trim = 0

    def ticket(self) -> Ticket:
        return Ticket(self)


class Ticket:
    """What one request holds of the budget."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes, or refuse: 413 if the body can never fit, else 503 with Retry-After."""
        budget = self.budget
        if self.held + size > budget.limit:
            raise BodyTooLarge(
                f"request body of more than {budget.limit} bytes exceeds {SETTING}, the most the router holds "
                "for all requests together"
            )
        if budget.held + size > budget.limit:
            raise RouterBusy(f"the router is holding as many request bodies as {SETTING} allows; retry shortly")
        budget.held += size
        budget.since_trim += size
        self.held += size
        budget.peak = max(budget.peak, budget.held)

    def give_back(self) -> None:
        """The request is done: what it held is free again (idempotent)."""
        if self.held:
            budget = self.budget
            budget.held -= self.held
            self.held = 0
            if not budget.held and budget.since_trim >= TRIM_AFTER and _TRIM is not None:
                budget.since_trim = 0
                # Soon, not now: the request's last references go when its task step ends.
                asyncio.get_running_loop().call_soon(_TRIM)
