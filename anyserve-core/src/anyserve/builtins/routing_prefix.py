"""The ``prefix`` scorer: a prompt goes where its beginning was sent before, where an engine likely still caches it.

Engines keep the key/value cache of recent prompts (vLLM's and SGLang's
prefix caching, llama.cpp's slots): a request that shares a long prefix
with one an engine served skips most of its prefill. This scorer learns,
from the router's own decisions and with no help from the engines, which
replica was sent which prefix: the prompt's chained block hashes
(:meth:`~anyserve.routing.request.RouteRequest.prefix_blocks`) go into an
index from block to the replicas that were sent it. A candidate scores the
share of the request's blocks, from the first, that it was sent.

It is an approximation of what the engines hold: an engine evicts by its
own policy, which the per-replica LRU of ``max_blocks`` blocks stands in
for. The memory is bounded by ``max_blocks`` per replica, ``max_total_blocks``
in all (about 150 bytes each) and ``max_replicas`` replicas, the least
recently chosen forgotten first.

Affinity yields to load the way session affinity does (consistent hashing
with bounded loads): a replica carrying more than ``load_factor`` times its
share of the candidates' load scores 0 however much it caches. So a popular
prefix spills onto a second replica when the first one is busy, and that
replica learns it too, instead of every request for it queueing on one engine.

Where an engine says what it caches (llama-server's slots, read by the
router's engine poller into the ``prompts`` signal), the scorer is precise
for it: the share of the prompt the engine reports holding
(:mod:`anyserve.routing.held`), or of what was sent to it in the last
:data:`RECENT_SECONDS`, which its last report may not show yet, whichever
is larger. Evictions, restarts and other routers' traffic then count.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from anyserve.builtins.routing_session import load_bound
from anyserve.candidates import Candidate
from anyserve.errors import ConfigError
from anyserve.hookspecs import hookimpl
from anyserve.records import RoutingStageSpec
from anyserve.routing.held import SIGNAL, EngineCache, pieces
from anyserve.routing.request import DEFAULT_BLOCK_CHARS, RouteRequest
from anyserve.routing.stages import SCORER, stage_options

DEFAULT_MAX_BLOCKS = 8192
DEFAULT_MIN_BLOCKS = 1
DEFAULT_MAX_REPLICAS = 1024
#: About 40 MB of index at most, whatever the replica count.
DEFAULT_MAX_TOTAL_BLOCKS = 262_144
DEFAULT_LOAD_FACTOR = 1.5
#: Most a replica scores for holding less than the others, for a prefix nobody holds: a full request of load
#: difference under ``least_load`` (1 against 0.5) at weight 1, so emptiness decides between near-equal loads.
VACANCY = 0.5
#: Cache holders nominated into a sampled decision: enough that one over its load bound leaves others.
NOMINEES = 4
#: Blocks a snapshot holds at most, over every replica: its file stays a few MiB whatever the bounds above.
SNAPSHOT_BLOCKS = 131_072
#: The snapshot's layout; a file of another version is ignored.
SNAPSHOT_VERSION = 1
#: Seconds a send to a reporting engine counts beside its report: the report is read once a second, and a
#: prompt sent just before a reading may still wait for a slot when it is read.
RECENT_SECONDS = 3.0
#: Sends remembered per reporting engine for that.
RECENT_SENDS = 16
#: An engine report older than this (its engine no longer answers ``/slots``) is not trusted.
STALE_SECONDS = 5.0


class PrefixAffinity:
    """Per candidate, the share of the request's leading blocks it was sent before, from 0.0 to 1.0.

    Each replica's blocks are an LRU touched last block first, so a prefix's
    leading blocks are always more recent than its later ones and are
    evicted after them: the blocks a replica holds of any chain are a
    leading run. So the holders of block *i* include the holders of block
    *i + 1*, and a score walks the request's blocks from the deepest, only
    reading a holder set where it grows: the cost follows the request's
    blocks and the replicas that hold them, not the replicas registered.
    """

    def __init__(
        self,
        block_chars: int = DEFAULT_BLOCK_CHARS,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        min_blocks: int = DEFAULT_MIN_BLOCKS,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        max_total_blocks: int = DEFAULT_MAX_TOTAL_BLOCKS,
        load_factor: float = DEFAULT_LOAD_FACTOR,
        precise: bool = True,
    ) -> None:
        if min(block_chars, max_blocks, min_blocks, max_replicas, max_total_blocks) < 1:
            raise ConfigError(
                "routing.options.prefix: block_chars, max_blocks, min_blocks, max_replicas and max_total_blocks "
                f"must be at least 1, got {block_chars!r}, {max_blocks!r}, {min_blocks!r}, {max_replicas!r}, "
                f"{max_total_blocks!r}"
            )
        if not 1.0 <= load_factor < float("inf"):
            raise ConfigError(f"routing.options.prefix: load_factor must be at least 1, got {load_factor!r}")
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        self.min_blocks = min_blocks
        self.max_replicas = max_replicas
        self.max_total_blocks = max_total_blocks
        self.load_factor = load_factor
        self.precise = precise
        self._total = 0
        self._last: tuple[Sequence[int] | None, dict[str, int]] = (None, {})
        #: Block hash -> the replica that was sent it, or the replicas when several were (a set per block
        #: would double the memory, and most blocks past a shared system prompt have one holder).
        self._holders: dict[int, str | set[str]] = {}
        #: Replica -> its blocks, least recently sent first; replicas least recently chosen first.
        self._replicas: OrderedDict[str, OrderedDict[int, None]] = OrderedDict()
        #: Reporting engine -> its latest sends, ``(time.monotonic(), blocks)``.
        self._sent: dict[str, deque[tuple[float, tuple[int, ...]]]] = {}

    def score(self, request: RouteRequest, candidates: Sequence[Candidate]) -> list[float]:
        blocks = request.prefix_blocks(self.block_chars)
        if len(blocks) < self.min_blocks:
            return [0.0] * len(candidates)
        reports = self._reports(candidates) if self.precise else None
        if reports is None and not self._holders:
            return [0.0] * len(candidates)
        depths = self.depths(blocks) if self._holders else {}
        if reports is None or not request.prompt:
            total = len(blocks)
            shares = [depths.get(c.id, 0) / total for c in candidates]
        else:
            shares = self._precise(request.prompt, blocks, candidates, reports, depths)
        bound = load_bound(candidates, self.load_factor)
        if not any(shares):
            return self._vacancy(candidates, bound)
        return [s if s and c.load <= bound else 0.0 for s, c in zip(shares, candidates, strict=True)]

    @staticmethod
    def _reports(candidates: Sequence[Candidate]) -> list[EngineCache | None] | None:
        """Each candidate's engine report if it has a fresh one; None when none has."""
        found: list[EngineCache | None] | None = None
        now = time.monotonic()
        for i, candidate in enumerate(candidates):
            report = candidate.signals.get(SIGNAL) if candidate.signals else None
            if isinstance(report, EngineCache) and report.age(now) <= STALE_SECONDS:
                if found is None:
                    found = [None] * len(candidates)
                found[i] = report
        return found

    def _precise(
        self,
        prompt: str,
        blocks: tuple[int, ...],
        candidates: Sequence[Candidate],
        reports: list[EngineCache | None],
        depths: Mapping[str, int],
    ) -> list[float]:
        """Shares of the prompt's characters: reported, or sent lately, for reporting engines; learned for the rest.

        In characters rather than whole blocks, as a report is matched by
        characters: a prompt whose partial last block is what differs
        (another user's short question after a shared system prompt) would
        otherwise score 1.0 by its blocks against a report's truer 0.9.
        """
        size = len(prompt)
        block_chars = self.block_chars
        first, whole = blocks[0], len(blocks)
        now = time.monotonic()
        parts = pieces(prompt)
        shares = []
        for candidate, report in zip(candidates, reports, strict=True):
            if report is None:
                shares.append(min(1.0, depths.get(candidate.id, 0) * block_chars / size))
                continue
            sent = 0
            for at, earlier in reversed(self._sent.get(candidate.id, ())):
                if now - at > RECENT_SECONDS:
                    break
                if earlier[0] == first:  # most recent sends began otherwise: no search for those
                    depth = _shared(blocks, earlier)
                    if depth > sent:
                        sent = depth
                        if depth == whole:
                            break
            shares.append(max(report.share(prompt, parts), min(1.0, sent * block_chars / size)))
        return shares

    def _vacancy(self, candidates: Sequence[Candidate], bound: int) -> list[float]:
        """A prefix no replica holds: up to :data:`VACANCY` for the candidates holding least, so new prefixes spread.

        As SGLang's cache-aware policy sends an unmatched prompt to the
        smallest tree: without it, a tie on load sends a fourth system
        prompt to an engine already caching another while an empty one
        idles (bench/routing_bench.py's quick run).
        """
        held = [len(self._replicas.get(c.id, ())) for c in candidates]
        most = max(held)
        if not most:
            return [0.0] * len(candidates)
        return [VACANCY * (1.0 - n / most) if c.load <= bound else 0.0 for n, c in zip(held, candidates, strict=True)]

    def nominate(self, request: RouteRequest, ids: Sequence[str]) -> list[str]:
        """The replicas holding the most of the request's prefix (at most :data:`NOMINEES`), deepest first."""
        blocks = request.prefix_blocks(self.block_chars)
        if len(blocks) < self.min_blocks or not self._holders:
            return []
        depths = self.depths(blocks)
        return sorted(depths, key=depths.__getitem__, reverse=True)[:NOMINEES]

    def depths(self, blocks: Sequence[int]) -> dict[str, int]:
        """Replica -> how many of ``blocks``, from the first, it was sent; replicas sent none are left out.

        Kept for the last ``blocks`` asked (the same tuple: one request's),
        as a sampled decision asks twice, to nominate and to score, with
        nothing learned in between.
        """
        if blocks is self._last[0]:
            return self._last[1]
        found = self._depths(blocks)
        self._last = (blocks, found)
        return found

    def _depths(self, blocks: Sequence[int]) -> dict[str, int]:
        """Each holder's depth, by binary search: a holder set's size only falls with depth (the sets nest).

        One search per depth at which holders drop out, each of about
        log2(blocks) look-ups: a 256-block prompt whose system prompt many
        replicas hold and whose tail one holds takes some twenty look-ups,
        not 256.
        """
        holders = self._holders
        found: dict[str, int] = {}
        deepest = len(blocks)
        while deepest:
            seen = len(found)
            # The deepest depth <= ``deepest`` held by more than ``seen`` replicas: depth 0 always is (by all).
            low, high = 0, deepest
            while low < high:
                middle = (low + high + 1) // 2
                held = holders.get(blocks[middle - 1])
                if held is not None and (1 if isinstance(held, str) else len(held)) > seen:
                    low = middle
                else:
                    high = middle - 1
            if not low:
                break
            held = holders[blocks[low - 1]]
            for replica_id in (held,) if isinstance(held, str) else held:  # more than ``seen``: one is new
                if replica_id not in found:
                    found[replica_id] = low
            deepest = low - 1
        return found

    def observe(self, request: RouteRequest, chosen: Candidate) -> None:
        """Record that ``chosen`` was sent the request's blocks: the engine there now caches that prefix."""
        blocks = request.prefix_blocks(self.block_chars)
        if not blocks:
            return
        self._last = (None, {})
        replica_id = chosen.id
        if self.precise and chosen.signals and isinstance(chosen.signals.get(SIGNAL), EngineCache):
            sent = self._sent.get(replica_id)
            if sent is None:
                sent = self._sent[replica_id] = deque(maxlen=RECENT_SENDS)
            sent.append((time.monotonic(), blocks))
        held = self._replicas.get(replica_id)
        if held is None:
            held = self._replicas[replica_id] = OrderedDict()
            while len(self._replicas) > self.max_replicas:
                self.forget(next(iter(self._replicas)))
        else:
            self._replicas.move_to_end(replica_id)
        for block in reversed(blocks):  # the first block touched last: the leading run outlives the tail
            if block in held:
                held.move_to_end(block)
            else:
                held[block] = None
                self._add(replica_id, block)
        while len(held) > self.max_blocks:
            self._drop(replica_id, held.popitem(last=False)[0])
        if self._total > self.max_total_blocks:
            self._shed()

    def _shed(self) -> None:
        """Over ``max_total_blocks``: the oldest blocks of the least recently chosen replicas go first."""
        for replica_id, held in self._replicas.items():  # only the replicas' own blocks change here
            while held and self._total > self.max_total_blocks:
                self._drop(replica_id, held.popitem(last=False)[0])
            if self._total <= self.max_total_blocks:
                return

    def _add(self, replica_id: str, block: int) -> None:
        self._total += 1
        owners = self._holders.get(block)
        if owners is None:
            self._holders[block] = replica_id
        elif isinstance(owners, str):
            if owners != replica_id:
                self._holders[block] = {owners, replica_id}
        else:
            owners.add(replica_id)

    def _drop(self, replica_id: str, block: int) -> None:
        self._total -= 1
        owners = self._holders.get(block)
        if owners is None:
            return
        if isinstance(owners, str):
            if owners == replica_id:
                del self._holders[block]
            return
        owners.discard(replica_id)
        if len(owners) == 1:
            self._holders[block] = next(iter(owners))
        elif not owners:
            del self._holders[block]

    def forget(self, target_id: str) -> None:
        """A replica left (or is least recently chosen past ``max_replicas``): drop every block it was sent."""
        self._last = (None, {})
        self._sent.pop(target_id, None)
        held = self._replicas.pop(target_id, None)
        for block in held or ():
            self._drop(target_id, block)

    def tracked(self) -> dict[str, int]:
        """Replica -> blocks it holds, least recently chosen first (for tests and the router's status)."""
        return {replica_id: len(held) for replica_id, held in self._replicas.items()}

    def snapshot(self) -> dict[str, Any]:
        """Each replica's most recent blocks, oldest first, at most :data:`SNAPSHOT_BLOCKS` in all."""
        share = max(1, SNAPSHOT_BLOCKS // max(1, len(self._replicas)))
        replicas = {}
        for replica_id, held in self._replicas.items():
            blocks = list(held)
            replicas[replica_id] = blocks[-share:]
        return {"version": SNAPSHOT_VERSION, "block_chars": self.block_chars, "replicas": replicas}

    def restore(self, data: Mapping[str, Any]) -> None:
        """The index from :meth:`snapshot`, within this scorer's bounds; one of another block size is refused."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"prefix snapshot version {data.get('version')!r}, expected {SNAPSHOT_VERSION}")
        if data.get("block_chars") != self.block_chars:
            raise ValueError(
                f"prefix snapshot of {data.get('block_chars')!r}-character blocks; this scorer hashes "
                f"{self.block_chars}: the saved hashes would match nothing"
            )
        replicas = data.get("replicas")
        if not isinstance(replicas, Mapping):
            raise ValueError("prefix snapshot without its 'replicas' table")
        for replica_id, blocks in list(replicas.items())[-self.max_replicas :]:
            if not isinstance(replica_id, str) or not isinstance(blocks, list):
                continue
            self.forget(replica_id)
            held: OrderedDict[int, None] = OrderedDict()
            for block in blocks[-self.max_blocks :]:
                if isinstance(block, int) and not isinstance(block, bool):
                    held[block] = None
                    held.move_to_end(block)
            for block in held:
                self._add(replica_id, block)
            self._replicas[replica_id] = held
        while len(self._replicas) > self.max_replicas:
            self.forget(next(iter(self._replicas)))
        if self._total > self.max_total_blocks:
            self._shed()


def _shared(blocks: Sequence[int], earlier: Sequence[int]) -> int:
    """How many leading block hashes two chains share: binary search, as a chain agrees up to where it parts."""
    low, high = 0, min(len(blocks), len(earlier))
    while low < high:
        middle = (low + high + 1) // 2
        if blocks[middle - 1] == earlier[middle - 1]:
            low = middle
        else:
            high = middle - 1
    return low


def build(options: Mapping[str, Any]) -> PrefixAffinity:
    """The scorer from ``[routing.options.prefix]``; an unknown option is a typo, refused by name."""
    return PrefixAffinity(
        **stage_options(
            "prefix",
            options,
            {
                "block_chars": DEFAULT_BLOCK_CHARS,
                "max_blocks": DEFAULT_MAX_BLOCKS,
                "min_blocks": DEFAULT_MIN_BLOCKS,
                "max_replicas": DEFAULT_MAX_REPLICAS,
                "max_total_blocks": DEFAULT_MAX_TOTAL_BLOCKS,
                "load_factor": DEFAULT_LOAD_FACTOR,
                "precise": True,
            },
        )
    )


@hookimpl
def anyserve_register_routing(register):
    register(RoutingStageSpec("prefix", SCORER, build, "where the prompt's beginning was sent before"))
