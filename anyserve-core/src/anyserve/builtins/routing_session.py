"""The ``session`` scorer: a conversation stays on one replica, within a bound on that replica's load.

Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", 2018): candidate ids sit on a hash
ring, each at ``virtual_nodes`` points, and a session's key walks the ring
from its own hash to the first replica whose load is at most
``ceil(load_factor * (total load + 1) / n)``. The ring is a pure function of
the candidate ids (hashlib, not the per-process ``hash()``), so a router
that restarts, or a second router, sends a session where the first did.

A ring alone moves about 1/n of the sessions when a replica joins, each
losing the engine's cached prefix of its conversation. So the scorer also
remembers where each session went (a bounded LRU of pins, keyed by a hash
of the session so no client string is held or saved) and keeps a pinned
session where it is while that replica is a candidate within the bound.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anyserve.candidates import Candidate
from anyserve.errors import ConfigError
from anyserve.hookspecs import hookimpl
from anyserve.records import RoutingStageSpec
from anyserve.routing.request import RouteRequest
from anyserve.routing.stages import SCORER, stage_options

DEFAULT_LOAD_FACTOR = 1.25
DEFAULT_MAX_SESSIONS = 100_000
DEFAULT_VIRTUAL_NODES = 64
#: Rings kept, one per distinct set of candidate ids (queries for different models see different sets).
MAX_RINGS = 64
#: Replicas a session nominates into a sampled decision: its pin, and the first owners on its ring
#: (the first is its home; the next ones are where it goes while the home is over its load bound).
NOMINEES = 3
#: Ring points cut from one 64-byte digest.
POINTS_PER_DIGEST = 8
#: The snapshot's layout; a file of another version is ignored.
SNAPSHOT_VERSION = 1


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and after every restart, unlike ``hash()``."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def virtual_points(replica_id: str, count: int) -> list[int]:
    """``count`` ring points of a replica: 64-bit slices of 64-byte digests, eight points per hash."""
    points: list[int] = []
    for round_ in range(-(-count // POINTS_PER_DIGEST)):
        digest = hashlib.blake2b(f"{replica_id}#{round_}".encode("utf-8", "surrogatepass"), digest_size=64).digest()
        points.extend(int.from_bytes(digest[i : i + 8], "big") for i in range(0, 64, 8))
    return points[:count]


@dataclass(frozen=True)
class Ring:
    """The hash ring of one set of candidate ids: ``points`` sorted, ``owners[i]`` the id at ``points[i]``."""

    points: tuple[int, ...]
    owners: tuple[str, ...]

    @classmethod
    def of(cls, ids: frozenset[str], virtual_nodes: int) -> Ring:
        """Every id at ``virtual_nodes`` points; a set of a thousand ids takes some tens of milliseconds."""
        points: list[int] = []
        owners: list[str] = []
        for replica_id in sorted(ids):
            points.extend(virtual_points(replica_id, virtual_nodes))
            owners.extend([replica_id] * virtual_nodes)
        order = sorted(range(len(points)), key=points.__getitem__)
        return cls(tuple(points[i] for i in order), tuple(owners[i] for i in order))

    def walk(self, key: int) -> Iterator[str]:
        """The owners clockwise from ``key``, once around the ring (ids repeat: a caller stops at the first it takes).

        Lazy: a walk usually ends at its first point, and copying a ring of
        ``n * virtual_nodes`` points per request would cost what the ring saves.
        """
        owners = self.owners
        start = bisect.bisect_left(self.points, key)
        for i in range(start, len(owners)):
            yield owners[i]
        for i in range(start):
            yield owners[i]


def load_bound(candidates: Sequence[Candidate], load_factor: float) -> int:
    """The most load a replica may carry and still take a session: the paper's ``ceil(c * (m + 1) / n)``.

    The ``+ 1`` counts the request being placed, so with every replica idle
    the bound is at least 1 and the ring's own choice always fits.
    """
    total = sum([c.load for c in candidates])
    return math.ceil(load_factor * (total + 1) / len(candidates))


class SessionAffinity:
    """1.0 for the replica a request's session belongs on, 0.0 for the others (all 0.0 without a session)."""

    def __init__(
        self,
        load_factor: float = DEFAULT_LOAD_FACTOR,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        virtual_nodes: int = DEFAULT_VIRTUAL_NODES,
    ) -> None:
        if not 1.0 <= load_factor < float("inf"):
            raise ConfigError(f"routing.options.session.load_factor must be at least 1, got {load_factor!r}")
        if max_sessions < 0 or virtual_nodes < 1:
            raise ConfigError(
                "routing.options.session: max_sessions must be at least 0 and virtual_nodes at least 1, "
                f"got {max_sessions!r} and {virtual_nodes!r}"
            )
        self.load_factor = float(load_factor)
        self.max_sessions = int(max_sessions)
        self.virtual_nodes = int(virtual_nodes)
        self._rings: OrderedDict[frozenset[str], Ring] = OrderedDict()
        #: The ring of the last whole set of matches seen (``request.matched``), and that tuple.
        self._whole: tuple[tuple[str, ...], Ring] | None = None
        #: Session hash -> the replica it was last sent to, least recently used first.
        self._pins: OrderedDict[int, str] = OrderedDict()
        #: The last session hashed and its hash: a decision asks three times (nominate, score, observe).
        self._last: tuple[str | None, int] = (None, 0)

    def key(self, session: str) -> int:
        """The session's place on the ring and in the pins: :func:`stable_hash`, kept for the last session asked."""
        last, key = self._last
        if session is not last:
            key = stable_hash(session)
            self._last = (session, key)
        return key

    def ring(self, ids: frozenset[str]) -> Ring:
        """The ring for this set of ids, built once and kept while the set keeps coming back."""
        found = self._rings.get(ids)
        if found is None:
            found = self._rings[ids] = Ring.of(ids, self.virtual_nodes)
            if len(self._rings) > MAX_RINGS:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(ids)
        return found

    def whole_ring(self, matched: tuple[str, ...]) -> Ring:
        """The ring of every matching replica, when the candidates are a sample of them: kept per tuple."""
        if self._whole is None or self._whole[0] is not matched:
            self._whole = (matched, self.ring(frozenset(matched)))
        return self._whole[1]

    def place(self, session: str, candidates: Sequence[Candidate], matched: tuple[str, ...] | None = None) -> int:
        """The index in ``candidates`` of the replica ``session`` belongs on now.

        ``matched``: every replica the query matched, when ``candidates`` is
        a sample: the ring is theirs, so a session's home does not move with
        the sample (the home is in the sample: :meth:`nominate` saw to it).
        """
        bound = load_bound(candidates, self.load_factor)
        index = {c.id: i for i, c in enumerate(candidates)}
        key = self.key(session)
        pinned = self._pins.get(key)
        if pinned is not None:
            at = index.get(pinned)
            if at is not None and candidates[at].load <= bound:
                return at
        ring = self.ring(frozenset(index)) if matched is None else self.whole_ring(matched)
        for owner in ring.walk(key):
            at = index.get(owner)
            if at is not None and candidates[at].load <= bound:
                return at
        # Unreachable while load_factor >= 1 (the least loaded replica is under the mean); kept for safety.
        return min(range(len(candidates)), key=lambda i: candidates[i].load)

    def score(self, request: RouteRequest, candidates: Sequence[Candidate]) -> list[float]:
        scores = [0.0] * len(candidates)
        if request.session and candidates:
            scores[self.place(request.session, candidates, request.matched)] = 1.0
        return scores

    def nominate(self, request: RouteRequest, ids: Sequence[str]) -> list[str]:
        """The session's pin and the first replicas on its ring: where :meth:`place` will look first."""
        if not request.session:
            return []
        key = self.key(request.session)
        named = [pinned] if (pinned := self._pins.get(key)) is not None else []
        matched = ids if isinstance(ids, tuple) else tuple(ids)
        for owner in self.whole_ring(matched).walk(key):
            if owner not in named:
                named.append(owner)
                if len(named) > NOMINEES:
                    break
        return named

    def observe(self, request: RouteRequest, chosen: Candidate) -> None:
        """Pin the session where it went, whatever decided it: that engine now holds its conversation."""
        if not request.session or not self.max_sessions:
            return
        key = self.key(request.session)
        self._pins[key] = chosen.id
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_sessions:
            self._pins.popitem(last=False)

    def forget(self, target_id: str) -> None:
        """A replica left: its sessions are placed afresh (its cache is gone with it), its rings dropped."""
        for key in [k for k, owner in self._pins.items() if owner == target_id]:
            del self._pins[key]
        for ids in [ids for ids in self._rings if target_id in ids]:
            del self._rings[ids]

    def snapshot(self) -> dict[str, Any]:
        """The pins, least recently used first; rings are not saved: they are rebuilt from the ids alone."""
        replicas: dict[str, int] = {}
        pins = [[key, replicas.setdefault(owner, len(replicas))] for key, owner in self._pins.items()]
        return {"version": SNAPSHOT_VERSION, "replicas": list(replicas), "pins": pins}

    def restore(self, data: Mapping[str, Any]) -> None:
        """Pins from :meth:`snapshot`, the most recent ``max_sessions`` of them; malformed entries are skipped."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"session snapshot version {data.get('version')!r}, expected {SNAPSHOT_VERSION}")
        replicas = data.get("replicas")
        pins = data.get("pins")
        if not isinstance(replicas, list) or not isinstance(pins, list):
            raise ValueError("session snapshot without its 'replicas' and 'pins' lists")
        for entry in pins[-self.max_sessions :] if self.max_sessions else ():
            if not (isinstance(entry, list) and len(entry) == 2):
                continue
            key, at = entry
            if isinstance(key, int) and isinstance(at, int) and 0 <= at < len(replicas):
                owner = replicas[at]
                if isinstance(owner, str):
                    self._pins[key] = owner
                    self._pins.move_to_end(key)
        while len(self._pins) > self.max_sessions:
            self._pins.popitem(last=False)


def build(options: Mapping[str, Any]) -> SessionAffinity:
    """The scorer from ``[routing.options.session]``; an unknown option is a typo, refused by name."""
    defaults = {
        "load_factor": DEFAULT_LOAD_FACTOR,
        "max_sessions": DEFAULT_MAX_SESSIONS,
        "virtual_nodes": DEFAULT_VIRTUAL_NODES,
    }
    return SessionAffinity(**stage_options("session", options, defaults))


@hookimpl
def anyserve_register_routing(register):
    register(RoutingStageSpec("session", SCORER, build, "one replica per session, within a bound on its load"))
