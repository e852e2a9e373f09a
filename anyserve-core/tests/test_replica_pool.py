"""The agent's worker pool, in process: which worker and which of its handlers serves a query.

Workers are :class:`FakeConnection` objects: the pool only reads what a
worker's handshake announced and its connection's load, so no process or
transport is started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import pytest

from anyserve import hookimpl
from anyserve.builtins.subset import SubsetMatcher
from anyserve.candidates import Candidate
from anyserve.capability import Capability
from anyserve.plugins import create_plugin_manager
from anyserve.replica.pool import WorkerPool, WorkerSlot
from anyserve.transport import Connection, Query

CHAT = {"type": "chat", "model": "llama"}
EMBED = {"type": "embed"}
CHAT_STREAM = {**CHAT, "stream": True}


class FakeConnection:
    """Stands in for a worker process and the transport to it, which these tests are not about.

    Implements :class:`anyserve.transport.Connection`: the handshake is the
    capabilities given, requests are answered with ``reply`` and recorded.
    """

    def __init__(self, *capabilities: Mapping[str, Any], reply: bytes = b"reply") -> None:
        self.hello: dict[str, Any] = {"capabilities": [dict(c) for c in capabilities], "pid": 4242}
        self.in_flight = 0
        self.closed = False
        self.reply = reply
        self.calls: list[tuple[bytes, dict[str, str]]] = []

    async def infer(self, payload: bytes, query: Query) -> bytes:
        self.calls.append((payload, dict(query)))
        return self.reply

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        self.calls.append((payload, dict(query)))
        yield self.reply

    async def close(self) -> None:
        self.closed = True


class CountingMatcher(SubsetMatcher):
    """The built-in subset matcher, counting how often it scores."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, offered: Capability, query: Mapping[str, Any]) -> float | None:
        self.calls += 1
        return super().score(offered, query)


class PickHighestId:
    """A routing plugin that records each call and deterministically picks the largest worker id."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], str, list[tuple[str, int]]]] = []

    @hookimpl
    def anyserve_select_target(
        self, query: Mapping[str, Any], candidates: Sequence[Candidate], scope: str
    ) -> Candidate | None:
        self.calls.append((dict(query), scope, sorted((c.id, c.in_flight) for c in candidates)))
        return max(candidates, key=lambda c: c.id)


def slot(worker_id: str, *capabilities: Mapping[str, Any]) -> WorkerSlot:
    return WorkerSlot.from_connection(worker_id, FakeConnection(*capabilities))


def fake(s: WorkerSlot) -> FakeConnection:
    return cast(FakeConnection, s.connection)


def chosen_id(pool: WorkerPool, query: Query) -> str | None:
    chosen = pool.choose(query, stream=False)
    return chosen[0].id if chosen else None


def make_pool(*slots: WorkerSlot, plugin: object | None = None, matcher: SubsetMatcher | None = None) -> WorkerPool:
    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(plugin,) if plugin else ())
    pool = WorkerPool(matcher or SubsetMatcher(), pm)
    for s in slots:
        pool.add(s)
    return pool


def test_the_fake_is_a_connection() -> None:
    assert isinstance(FakeConnection(CHAT), Connection)


def test_choose_names_the_worker_and_the_handler_index_from_its_handshake() -> None:
    worker = slot("w0", EMBED, CHAT, CHAT_STREAM)
    pool = make_pool(worker)

    assert pool.choose({"type": "embed"}, stream=False) == (worker, 0)
    assert pool.choose({"type": "chat"}, stream=False) == (worker, 1)
    assert pool.choose({"type": "chat"}, stream=True) == (worker, 2)
    assert pool.choose({"type": "vision"}, stream=False) is None


def test_the_handshake_keys_that_are_not_capability_attributes_are_stripped() -> None:
    worker = slot("w0", {**CHAT, "state": "hot"}, CHAT_STREAM)

    assert worker.unary == [Capability(CHAT)]
    assert worker.streaming == [Capability(CHAT)]
    assert worker.handler(Capability(CHAT), stream=True) == 1
    assert worker.pid == 4242


def test_unary_and_streaming_offers_are_kept_apart() -> None:
    streamer, plain = slot("s", CHAT_STREAM), slot("u", EMBED)
    pool = make_pool(streamer, plain)

    assert pool.choose({"type": "chat"}, stream=False) is None
    assert pool.choose({"type": "chat"}, stream=True) == (streamer, 0)
    assert pool.choose({"type": "embed"}, stream=True) is None
    assert pool.choose({"type": "embed"}, stream=False) == (plain, 0)


def test_closed_connections_are_skipped() -> None:
    plugin = PickHighestId()
    a, b = slot("a", CHAT), slot("b", CHAT)
    pool = make_pool(a, b, plugin=plugin)
    fake(b).closed = True

    assert pool.choose(CHAT, stream=False) == (a, 0)
    assert plugin.calls == []  # one live match: nothing to decide
    fake(a).closed = True
    assert pool.choose(CHAT, stream=False) is None


def test_several_matching_workers_go_to_the_routing_hook_with_agent_scope() -> None:
    plugin = PickHighestId()
    a, b = slot("a", CHAT), slot("b", EMBED, CHAT)
    pool = make_pool(a, b, slot("c", EMBED), plugin=plugin)
    fake(a).in_flight = 3

    assert pool.choose({"type": "chat"}, stream=False) == (b, 1)  # b's chat handler is its second
    assert plugin.calls == [({"type": "chat"}, "agent", [("a", 3), ("b", 0)])]


def test_a_single_match_is_not_routed() -> None:
    plugin = PickHighestId()
    pool = make_pool(slot("a", CHAT), slot("b", EMBED), plugin=plugin)

    assert pool.choose({"type": "chat"}, stream=False) is not None
    assert plugin.calls == []


def test_the_built_in_routing_picks_the_least_loaded_worker() -> None:
    busy, idle = slot("busy", CHAT), slot("idle", CHAT)
    fake(busy).in_flight = 5
    pool = make_pool(busy, idle)

    assert {chosen_id(pool, CHAT) for _ in range(20)} == {"idle"}


def test_one_match_per_query_until_the_workers_change() -> None:
    matcher = CountingMatcher()
    pool = make_pool(slot("a", CHAT, EMBED), slot("b", CHAT), matcher=matcher)

    pool.choose({"type": "chat"}, stream=False)
    scored = matcher.calls
    assert scored == 3  # every unary offer of every worker, once
    pool.choose({"type": "chat"}, stream=False)
    assert matcher.calls == scored  # the same query hits the cache
    pool.choose({"type": "chat"}, stream=True)
    assert matcher.calls == scored  # no streaming offers: nothing to score, but a new key

    pool.add(slot("c", CHAT))
    pool.choose({"type": "chat"}, stream=False)
    assert matcher.calls == scored + 4  # add() invalidated the cache
    pool.remove("c")
    assert chosen_id(pool, {"type": "chat"}) in {"a", "b"}
    assert matcher.calls == scored + 4 + 3  # and so did remove()


def test_remove_returns_the_slot_and_forgets_it() -> None:
    a = slot("a", CHAT)
    pool = make_pool(a)

    assert pool.remove("a") is a
    assert pool.remove("a") is None
    assert pool.choose(CHAT, stream=False) is None


@pytest.mark.parametrize("merge", [False, True], ids=["offers", "merge_offers"])
def test_offers_are_deduplicated_and_keep_stream_apart(merge: bool) -> None:
    pool = make_pool(slot("a", CHAT, CHAT_STREAM), slot("b", CHAT, EMBED))

    offers = WorkerPool.merge_offers(pool.slots.values()) if merge else pool.offers()

    assert offers == [CHAT, CHAT_STREAM, EMBED]


def test_merge_offers_covers_only_the_slots_given() -> None:
    a, b = slot("a", CHAT), slot("b", EMBED)

    assert WorkerPool.merge_offers([b]) == [EMBED]
    assert WorkerPool.merge_offers([]) == []
    assert make_pool(a, b).offers() == [CHAT, EMBED]


def test_snapshot_describes_each_worker() -> None:
    a = slot("a", CHAT, CHAT_STREAM)
    a.worker_class = "Llama"
    fake(a).in_flight = 2
    b = slot("b", EMBED)
    fake(b).closed = True

    assert make_pool(a, b).snapshot() == [
        {
            "id": "a",
            "worker_class": "Llama",
            "pid": 4242,
            "in_flight": 2,
            "alive": True,
            "responsive": True,
            "capabilities": [CHAT, CHAT_STREAM],
        },
        {
            "id": "b",
            "worker_class": None,
            "pid": 4242,
            "in_flight": 0,
            "alive": False,
            "responsive": True,
            "capabilities": [EMBED],
        },
    ]
