"""How anyserve's long-running processes (router, agent, workers) run Python's cyclic garbage collector.

With Python's defaults (a young-generation collection every 700 net
allocations of container objects) a router under load collected every 15
requests or so and found nothing: request objects die by reference count,
but the ones still in flight are counted as new each time a collection
promotes them, so the count is always near the threshold. On a routed
echo at 64 connections that was about 7% of the router's CPU, plus a full
collection of every object start-up made (imports, plugins, a model's
graph) now and then: 36 ms, once per ~2,000 requests, with tracing
imported.

So once a process has started, :func:`settle` collects what start-up left
behind, moves every surviving object out of the collector's sight
(``gc.freeze``: they live as long as the process) and lets the young
generation grow to :data:`YOUNG` objects before it is collected, more than
the in-flight requests of a loaded router hold. Cycles are still
collected, later and over fewer objects.

``ANYSERVE_GC`` chooses: ``tuned`` (the default) or ``default`` (Python's
own thresholds and nothing frozen, e.g. to rule this out while chasing
memory). Workers inherit the agent's environment.
"""

from __future__ import annotations

import gc
import os

from anyserve.errors import ConfigError

ENV = "ANYSERVE_GC"
CHOICES = ("tuned", "default")
#: Net new container objects between young collections (Python's default: 700).
YOUNG = 10_000


def choice() -> str:
    """The configured policy: ``tuned`` or ``default`` (:class:`ConfigError` for anything else)."""
    value = os.environ.get(ENV, "tuned").strip().lower() or "tuned"
    if value not in CHOICES:
        raise ConfigError(f"{ENV}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def settle(policy: str | None = None) -> None:
    """Call once the process has started, before it serves: freeze start-up's objects and collect less often.

    ``policy`` is :func:`choice`'s answer, read earlier where a bad value
    should stop the start; ``None`` reads it now.
    """
    if (policy or choice()) == "default":
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
