"""The event loop anyserve's processes run: uvloop where it is installed, as uvicorn's ``auto`` picks for the router.

A replica's agent and its workers do little per request but relay it:
read a frame, hand it on, write the answer back. On the standard library's
loop the scheduling itself (Python-level handles, ``call_soon``, the
selector) is a large share of that; uvloop does it in C. Measured on a
routed echo: see docs/architecture.md ("Event loops").

``ANYSERVE_EVENT_LOOP`` chooses: ``auto`` (the default: uvloop if it can be
imported), ``uvloop`` (required: an error where it is missing) or
``asyncio`` (the standard library's loop, e.g. to rule the loop out while
debugging). Workers inherit the agent's environment, so one setting covers
a whole replica; the router reads it too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from anyserve.errors import ConfigError

ENV = "ANYSERVE_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def choice() -> str:
    """The configured loop: ``auto``, ``uvloop`` or ``asyncio`` (:class:`ConfigError` for anything else)."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ConfigError(f"{ENV}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes this process's event loop; ``None`` for the standard library's."""
    wanted = choice()
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the configured loop."""
    try:
        factory = loop_factory()
    except ConfigError:
        main.close()  # never started: no "never awaited" warning after the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
