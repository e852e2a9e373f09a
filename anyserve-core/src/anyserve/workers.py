"""Worker classes: capabilities with a lifecycle, started on demand.

::

    @app.worker(capabilities=[{"type": "chat", "model": "llama-70b"}],
                resources={"gpus": 2}, idle_timeout=300, max_concurrency=4)
    class Llama(Worker):
        def on_start(self):            # load the model; runs in the worker process
            self.engine = load("llama-70b")

        def handle(self, request, context):               # unary requests
            ...

        def handle_stream(self, request, context, stream):  # streaming requests
            ...

        def on_cleanup(self):          # idle stop, eviction or shutdown
            self.engine.close()

A worker class runs in its own process, started when a request first needs
it (or never), stopped after ``idle_timeout`` seconds without requests or
when the replica's resource budget needs room for another. Each method may
be plain or ``async def``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anyserve.capability import Capability


class Worker:
    """Optional base class: no-op lifecycle hooks to override."""

    def on_start(self) -> None:
        """Called once in the worker process before it serves anything."""

    def on_cleanup(self) -> None:
        """Called once when the worker stops (idle, evicted, shutdown)."""


@dataclass(frozen=True)
class WorkerClass:
    """A registered worker class and how the replica may run it."""

    name: str
    cls: type
    capabilities: tuple[Capability, ...]
    resources: Mapping[str, float] = field(default_factory=dict)
    #: Seconds without requests before the worker is stopped; None keeps it running.
    idle_timeout: float | None = None
    max_concurrency: int = 1
    #: Seconds ``on_start`` may take before the start counts as failed.
    start_timeout: float = 600.0

    @property
    def unary(self) -> bool:
        return callable(getattr(self.cls, "handle", None))

    @property
    def streaming(self) -> bool:
        return callable(getattr(self.cls, "handle_stream", None))

    def describe(self) -> list[dict[str, Any]]:
        """The capability dicts this class offers (``stream`` marks streaming ones)."""
        offers: list[dict[str, Any]] = []
        for cap in self.capabilities:
            if self.unary:
                offers.append(cap.to_dict())
            if self.streaming:
                offers.append({**cap.to_dict(), "stream": True})
        return offers


def make_worker_class(
    cls: type,
    capabilities: Sequence[Mapping[str, Any]],
    *,
    resources: Mapping[str, float] | None,
    idle_timeout: float | None,
    max_concurrency: int,
    start_timeout: float,
) -> WorkerClass:
    """Validate a decorated class now, so mistakes surface at import, not at first request."""
    if not inspect.isclass(cls):
        raise TypeError(f"@app.worker decorates a class, not {cls!r}")
    if not capabilities:
        raise TypeError(f"@app.worker on {cls.__qualname__} needs capabilities=[{{...}}, ...]")
    caps = tuple(Capability(c) for c in capabilities)
    if any(len(c) == 0 for c in caps):
        raise TypeError(f"@app.worker on {cls.__qualname__}: every capability needs at least one attribute")
    spec = WorkerClass(
        name=cls.__qualname__,
        cls=cls,
        capabilities=caps,
        resources={str(k): float(v) for k, v in (resources or {}).items()},
        idle_timeout=idle_timeout,
        max_concurrency=max_concurrency,
        start_timeout=start_timeout,
    )
    if not (spec.unary or spec.streaming):
        raise TypeError(f"worker class {cls.__qualname__} defines neither handle() nor handle_stream()")
    if max_concurrency < 1:
        raise TypeError(f"worker class {cls.__qualname__}: max_concurrency must be at least 1")
    if any(v < 0 for v in spec.resources.values()):
        raise TypeError(f"worker class {cls.__qualname__}: resources cannot be negative")
    return spec
