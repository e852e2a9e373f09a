"""The agent's view of its workers: what each offers, and which one serves a request.

The agent matches once per request, here: the choice names the worker and
the index of the handler it runs, which the worker is told instead of
matching again.

A worker that is restarting (a plain worker that died) or not answering its
liveness probes (:mod:`anyserve.replica.liveness`) is still this replica's:
its capabilities are offered as ``starting`` or ``failed``, and a request
for them waits up to ``replica.worker_wait_seconds`` for it
(:meth:`WorkerPool.wait_for`) instead of being delegated away as if the
replica never served them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.candidates import FAILED, HOT, STARTING, Candidate
from anyserve.capability import RUNTIME_KEYS, Capability
from anyserve.errors import Unavailable
from anyserve.matching import Matcher
from anyserve.plugins import PluginManager
from anyserve.protocol import RequestMeta
from anyserve.routing import Pipeline, RouteRequest
from anyserve.routing.pipeline import default_pipeline
from anyserve.transport import Connection, Query

#: Seconds a request waits for a worker that is restarting or not answering (``replica.worker_wait_seconds``).
WORKER_WAIT = 5.0
_STATE_ORDER = {HOT: 0, STARTING: 1, FAILED: 2}


@dataclass
class WorkerSlot:
    """One worker: its connection and the capabilities its handshake announced."""

    id: str
    connection: Connection
    #: The worker class it runs; None for the app's plain handlers.
    worker_class: str | None = None
    unary: list[Capability] = field(default_factory=list)
    streaming: list[Capability] = field(default_factory=list)
    #: (capability, stream) -> the index of the worker's handler serving it (its place in the handshake).
    handlers: dict[tuple[Capability, bool], int] = field(default_factory=dict)
    #: The other way: handler index -> (capability, stream), what a request's duration is counted under.
    offer_keys: list[tuple[Capability, bool]] = field(default_factory=list)
    #: Requests the worker serves at once (its handshake says); 0 when it does not say.
    concurrency: int = 0
    #: time.monotonic() of the last request start or end (idle detection).
    last_used: float = field(default_factory=time.monotonic)
    #: When the worker joined the pool: a ``last_used`` after it means it served something.
    joined: float = 0.0
    #: False while the worker leaves liveness probes unanswered: it gets no requests until it answers again.
    responsive: bool = True

    @classmethod
    def from_connection(cls, worker_id: str, connection: Connection, worker_class: str | None = None) -> WorkerSlot:
        slot = cls(worker_id, connection, worker_class)
        slot.joined = slot.last_used
        concurrency = connection.hello.get("concurrency")
        slot.concurrency = concurrency if isinstance(concurrency, int) and concurrency > 0 else 0
        for index, offer in enumerate(connection.hello.get("capabilities", [])):
            attrs = {k: v for k, v in offer.items() if k not in RUNTIME_KEYS}
            stream = bool(offer.get("stream"))
            cap = Capability(attrs)
            (slot.streaming if stream else slot.unary).append(cap)
            slot.handlers.setdefault((cap, stream), index)
            slot.offer_keys.append((cap, stream))
        return slot

    @property
    def full(self) -> bool:
        """Whether a request sent now would wait inside the worker for a free slot."""
        return 0 < self.concurrency <= self.connection.in_flight

    @property
    def waiting(self) -> int:
        """Requests sent to it that wait inside the worker for a free slot."""
        return max(0, self.connection.in_flight - self.concurrency) if self.concurrency else 0

    def handler(self, capability: Capability, stream: bool) -> int:
        """The index of the handler serving ``capability`` (as this worker announced it)."""
        return self.handlers[(capability, stream)]

    def tensors(self, index: int) -> dict[str, Any]:
        """The inputs and outputs handler ``index`` declares (empty lists when it declares none)."""
        declared = self.connection.hello.get("tensors") or []
        return declared[index] if index < len(declared) else {"inputs": [], "outputs": []}

    @property
    def pid(self) -> int | None:
        return self.connection.hello.get("pid")

    @property
    def served(self) -> bool:
        """Whether the worker took a request since it joined (a crash then is the request's, not the start's)."""
        return self.last_used > self.joined

    def matches(self, query: Query, matcher: Matcher, stream: bool) -> bool:
        """Whether one of this worker's handlers of that kind matches ``query``."""
        return any(matcher.score(cap, query) is not None for cap in (self.streaming if stream else self.unary))


class WorkerPool:
    """Chooses a worker per request: matcher scores, then the routing pipeline decides."""

    def __init__(self, matcher: Matcher, pm: PluginManager, pipeline: Pipeline | None = None) -> None:
        self.matcher = matcher
        self.pm = pm
        #: The same pipeline as the router's (``[routing]``), over workers (scope ``agent``).
        self.pipeline = pipeline if pipeline is not None else default_pipeline(pm, scope="agent")
        self.slots: dict[str, WorkerSlot] = {}
        #: Plain workers that died and are being restarted, as they were: what they offer is "starting".
        self.restarting: dict[str, WorkerSlot] = {}
        #: Seconds a request waits for a worker that is restarting or not answering.
        self.wait_seconds = WORKER_WAIT
        #: Called when what the pool offers changes (a worker comes, goes, stops or starts answering).
        self.on_change: Callable[[], None] = lambda: None
        self._matches: dict[tuple[tuple[tuple[str, str], ...], bool], list[tuple[str, Capability, float]]] = {}
        self._changed: asyncio.Event | None = None

    def add(self, slot: WorkerSlot) -> None:
        self.slots[slot.id] = slot
        self.restarting.pop(slot.id, None)
        self._matches.clear()
        self._notify()

    def remove(self, worker_id: str) -> WorkerSlot | None:
        self._matches.clear()
        slot = self.slots.pop(worker_id, None)
        if slot is not None:
            self.on_change()
        return slot

    def set_responsive(self, slot: WorkerSlot, responsive: bool) -> None:
        """A liveness probe's verdict; a change takes the worker out of routing or puts it back."""
        if slot.responsive != responsive:
            slot.responsive = responsive
            self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        self.on_change()

    @staticmethod
    def merge_offers(slots: Iterable[WorkerSlot]) -> list[dict[str, Any]]:
        """The capabilities ``slots`` offer, as handshake dicts, without duplicates."""
        seen: dict[tuple[Capability, bool], dict[str, Any]] = {}
        for slot in slots:
            for cap in slot.unary:
                seen.setdefault((cap, False), cap.to_dict())
            for cap in slot.streaming:
                seen.setdefault((cap, True), {**cap.to_dict(), "stream": True})
        return list(seen.values())

    def offers(self) -> list[dict[str, Any]]:
        """Every capability some running worker offers."""
        return self.merge_offers(self.slots.values())

    def plain_offers(self) -> list[dict[str, Any]]:
        """What the plain workers offer, each with a state: ``hot`` when a worker that answers serves it,
        ``starting`` while its worker restarts, ``failed`` while its worker leaves liveness probes unanswered."""
        states: dict[tuple[Capability, bool], tuple[dict[str, Any], str]] = {}
        plain = [s for s in self.slots.values() if s.worker_class is None]
        for state, slots in (
            (HOT, [s for s in plain if s.responsive and not s.connection.closed]),
            (STARTING, [*self.restarting.values(), *(s for s in plain if s.connection.closed)]),
            (FAILED, [s for s in plain if not s.responsive and not s.connection.closed]),
        ):
            for offer in self.merge_offers(slots):
                key = (Capability({k: v for k, v in offer.items() if k != "stream"}), bool(offer.get("stream")))
                if key not in states or _STATE_ORDER[state] < _STATE_ORDER[states[key][1]]:
                    states[key] = (offer, state)
        return [{**offer, "state": state} for offer, state in states.values()]

    def _matching(self, query: Query, stream: bool) -> list[tuple[str, Capability, float]]:
        key = (tuple(query.items()), stream)  # as it arrived: normalising happens in the matcher, on a miss
        found = self._matches.get(key)
        if found is None:
            found = []
            for slot in self.slots.values():
                best: tuple[Capability, float] | None = None
                for cap in slot.streaming if stream else slot.unary:
                    score = self.matcher.score(cap, query)
                    if score is not None and (best is None or score > best[1]):
                        best = (cap, score)
                if best is not None:
                    found.append((slot.id, *best))
            if len(self._matches) > 4096:
                self._matches.clear()
            self._matches[key] = found
        return found

    def choose(self, query: Query, *, stream: bool) -> tuple[WorkerSlot, int] | None:
        """The worker to serve ``query`` and its handler's index, or None when no live worker offers it."""
        live = [(wid, cap, score) for wid, cap, score in self._matching(query, stream) if self._live(wid)]
        if not live:
            return None
        if len(live) == 1:
            wid, cap, _ = live[0]
        else:
            candidates = [
                Candidate(id=wid, capability=cap, score=score, in_flight=self.slots[wid].connection.in_flight)
                for wid, cap, score in live
            ]
            chosen = self.pipeline.choose(RouteRequest(query, stream), candidates)
            if chosen is None:
                return None
            wid, cap = chosen.id, chosen.capability
        slot = self.slots[wid]
        return slot, slot.handler(cap, stream)

    def load(self) -> tuple[int, int]:
        """Requests waiting in workers for a free slot, and requests out to workers (those waiting included)."""
        waiting = in_flight = 0
        for slot in self.slots.values():
            sent = slot.connection.in_flight
            in_flight += sent
            if slot.concurrency and sent > slot.concurrency:
                waiting += sent - slot.concurrency
        return waiting, in_flight

    def serving(self) -> bool:
        """Whether some worker is up and answering."""
        return any(s.responsive and not s.connection.closed for s in self.slots.values())

    def _live(self, worker_id: str) -> bool:
        slot = self.slots.get(worker_id)
        return slot is not None and slot.responsive and not slot.connection.closed

    def coming(self, query: Query, *, stream: bool) -> str | None:
        """Why a worker for ``query`` may be back soon (restarting, or not answering); None if none is expected."""
        for slot in self.slots.values():
            if not slot.responsive and not slot.connection.closed and slot.matches(query, self.matcher, stream):
                return f"worker {slot.id} does not answer its liveness probes"
        for slot in [*self.restarting.values(), *(s for s in self.slots.values() if s.connection.closed)]:
            if slot.matches(query, self.matcher, stream):
                return f"worker {slot.id} is restarting"
        return None

    async def wait_for(self, meta: RequestMeta, *, stream: bool) -> tuple[WorkerSlot, int]:
        """The worker for ``meta`` once one is back, within :attr:`wait_seconds` and the request's deadline.

        Raises :class:`Unavailable` ("not now": HTTP 503 at the router) when none came back in time.
        """
        limit = self.wait_seconds
        left = meta.timeout()
        if left is not None:
            limit = min(limit, left)
        until = time.monotonic() + limit
        while True:
            chosen = self.choose(meta.query, stream=stream)
            if chosen is not None:
                return chosen
            why = self.coming(meta.query, stream=stream)
            remaining = until - time.monotonic()
            if why is None or remaining <= 0:
                break
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        raise Unavailable(
            f"no worker can take {dict(meta.query)} right now ({why or 'its worker went away'}; waited {limit:.1f}s); "
            f"retry shortly (request {meta.request_id or '-'})"
        )

    def snapshot(self) -> list[Mapping[str, Any]]:
        return [
            {
                "id": slot.id,
                "worker_class": slot.worker_class,
                "pid": slot.pid,
                "in_flight": slot.connection.in_flight,
                "alive": not slot.connection.closed,
                "responsive": slot.responsive,
                "capabilities": [c.to_dict() for c in slot.unary]
                + [{**c.to_dict(), "stream": True} for c in slot.streaming],
            }
            for slot in self.slots.values()
        ]
