"""The agent's view of its workers: what each offers, and which one serves a request.

The agent matches once per request, here: the choice names the worker and
the index of the handler it runs, which the worker is told instead of
matching again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.candidates import Candidate
from anyserve.capability import RUNTIME_KEYS, Capability
from anyserve.matching import Matcher
from anyserve.plugins import PluginManager
from anyserve.transport import Connection, Query


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
    #: time.monotonic() of the last request start or end (idle detection).
    last_used: float = field(default_factory=time.monotonic)

    @classmethod
    def from_connection(cls, worker_id: str, connection: Connection, worker_class: str | None = None) -> WorkerSlot:
        slot = cls(worker_id, connection, worker_class)
        for index, offer in enumerate(connection.hello.get("capabilities", [])):
            attrs = {k: v for k, v in offer.items() if k not in RUNTIME_KEYS}
            stream = bool(offer.get("stream"))
            cap = Capability(attrs)
            (slot.streaming if stream else slot.unary).append(cap)
            slot.handlers.setdefault((cap, stream), index)
        return slot

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


class WorkerPool:
    """Chooses a worker per request: matcher scores, then the routing hook decides."""

    def __init__(self, matcher: Matcher, pm: PluginManager) -> None:
        self.matcher = matcher
        self.pm = pm
        self.slots: dict[str, WorkerSlot] = {}
        self._matches: dict[tuple[tuple[tuple[str, str], ...], bool], list[tuple[str, Capability, float]]] = {}

    def add(self, slot: WorkerSlot) -> None:
        self.slots[slot.id] = slot
        self._matches.clear()

    def remove(self, worker_id: str) -> WorkerSlot | None:
        self._matches.clear()
        return self.slots.pop(worker_id, None)

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
            chosen = self.pm.hook.anyserve_select_target(query=dict(query), candidates=candidates, scope="agent")
            if chosen is None:
                return None
            wid, cap = chosen.id, chosen.capability
        slot = self.slots[wid]
        return slot, slot.handler(cap, stream)

    def _live(self, worker_id: str) -> bool:
        slot = self.slots.get(worker_id)
        return slot is not None and not slot.connection.closed

    def snapshot(self) -> list[Mapping[str, Any]]:
        return [
            {
                "id": slot.id,
                "worker_class": slot.worker_class,
                "pid": slot.pid,
                "in_flight": slot.connection.in_flight,
                "alive": not slot.connection.closed,
                "capabilities": [c.to_dict() for c in slot.unary]
                + [{**c.to_dict(), "stream": True} for c in slot.streaming],
            }
            for slot in self.slots.values()
        ]
