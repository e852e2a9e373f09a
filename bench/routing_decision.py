"""What one routing decision costs in the router, with many replicas registered.

In-process, no sockets: a registry of N replicas and the router's own
choice (:meth:`anyserve_router.forwarding.Router.pick`: matching through the
router's match cache, candidates with their load signals, then the routing
pipeline), timed over many decisions after a warm-up. Each replica offers
one chat model; scenarios differ in how many of them match a request:

* ``spread``: 1,000 replicas over 100 models, 10 match (routing by capability);
* ``all``: 1,000 replicas of one model, all 1,000 match (the worst case);
* with ``--reports``, ``engines``: 4 engine servers of one model, and
  ``reporting``: the same 4 each reporting what its 4 slots hold
  (llama-server's ``/slots``, read by the ``prefix`` scorer's precise half);

each with the default pipeline and with the LLM scorers: prefix and session
affinity for 32 users of 8 system prompts of about 1,000 tokens, each user's
conversation growing by turns (the workload of bench/routing_bench.py)::

    .venv/bin/python bench/routing_decision.py [--replicas 1000] [--decisions 5000] [--rounds 5] [--reports]

Prints microseconds per decision, the best round and the median; the
target is at most 50 µs with 1,000 replicas registered.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from anyserve.builtins.subset import SubsetMatcher
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError
from anyserve.plugins import create_plugin_manager
from anyserve.routing import RouteRequest, build_pipeline
from anyserve.routing.held import SIGNAL, EngineCache, pieces
from anyserve_router.forwarding import Router
from anyserve_router.registry import ReplicaRegistry

#: Eight system prompts of about 1,000 tokens each, as in bench/routing_bench.py's workload.
SYSTEMS = [
    f"system\x1fYou are assistant {n} of a support desk. " + "Answer carefully and cite the manual. " * 110 + "\x1e"
    for n in range(8)
]
USERS = 32


def prompt(user: int, turn: int) -> str:
    """User ``user``'s conversation at ``turn``: their system prompt, up to three earlier turns, a new question."""
    history = "".join(
        f"user\x1fQuestion {t} of user {user}: how do I reset it?\x1eassistant\x1fHold the button for "
        f"{t + 3} seconds, then wait for the light.\x1e"
        for t in range(turn % 4)
    )
    return f"{SYSTEMS[user % len(SYSTEMS)]}{history}user\x1fQuestion {turn} of user {user}: and then?\x1e"


TARGET_MICROS = 50
PIPELINES: dict[str, Mapping[str, str]] = {
    "default (cold_start, least_load; highest)": {},
    "p2c": {"ANYSERVE_ROUTING_PICKER": "p2c"},
    "prefix + session + least_load": {"ANYSERVE_ROUTING_SCORERS": "prefix=2,session=2,least_load=1"},
}


def registry_of(replicas: int, models: int) -> ReplicaRegistry:
    registry = ReplicaRegistry(ttl_seconds=3600)
    for i in range(replicas):
        registry.register(f"r{i}", f"127.0.0.1:{10000 + i}", [{"type": "chat", "model": f"m{i % models}"}])
    return registry


def with_reports(engines: int, slots: int) -> ReplicaRegistry:
    """``engines`` replicas of one model, each reporting ``slots`` users' conversations rendered as ChatML."""
    registry = registry_of(engines, 1)
    for e in range(engines):
        texts = []
        for user in range(e, e + engines * slots, engines):
            # ChatML around each message (one role for all: the match reads contents only)
            texts.append("".join(f"<|im_start|>user\n{c}<|im_end|>\n" for _, c in pieces(prompt(user, 3))))
        # dated an hour ahead: it stays fresh through the run, as a report read every second does
        registry.report(f"r{e}", {SIGNAL: EngineCache(tuple(texts), time.monotonic() + 3600)})
    return registry


def requests(query: Mapping[str, str]) -> Callable[[], RouteRequest]:
    """A chat request's routing view each call: :data:`USERS` users taking turns, each conversation growing."""
    turns = itertools.count()
    # Made beforehand: a front reads the prompt from the body, and building strings here is not routing's cost.
    sessions = [f"user-{user}" for user in range(USERS)]
    prompts = [[prompt(user, turn) for turn in range(4)] for user in range(USERS)]

    def make() -> RouteRequest:
        n = next(turns)
        user, turn = n % USERS, n // USERS
        return RouteRequest(query, False, sessions[user], prompts[user][turn % 4])

    return make


def measure(router: Router, decisions: int, make: Any, rounds: int) -> tuple[float, float]:
    """Best and median µs per decision over ``rounds`` rounds: the best is the code's cost, the rest the machine's."""
    for _ in range(min(2000, decisions)):  # warm: caches filled, as in a running router
        router.pick(make().query, route=make())
    per_round: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(decisions):
            route = make()
            router.pick(route.query, route=route)
        per_round.append((time.perf_counter() - started) / decisions * 1e6)
    return min(per_round), statistics.median(per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=5000, help="decisions per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--reports", action="store_true", help="also 4 engines, without and with reports of their slots' prompts"
    )
    args = parser.parse_args()
    pm = create_plugin_manager(entrypoints=False, env={})
    catalog = Catalog(pm)
    print(
        f"{args.replicas} replicas registered; µs per decision (Router.pick), best and median of "
        f"{args.rounds} rounds of {args.decisions} decisions; target: at most {TARGET_MICROS} µs"
    )
    scenarios = [("spread", max(1, args.replicas // 10)), ("all", 1)]
    if args.reports:
        scenarios += [("engines", 1), ("reporting", 1)]
    for scenario, models in scenarios:
        if scenario in ("engines", "reporting"):
            registry = with_reports(4, 4) if scenario == "reporting" else registry_of(4, 1)
            matching = 4
        else:
            registry = registry_of(args.replicas, models)
            matching = sum(1 for i in range(args.replicas) if i % models == 0)
        query = {"type": "chat", "model": "m0"}
        for name, env in PIPELINES.items():
            try:
                pipeline = build_pipeline(catalog, load_settings(env=dict(env)))
            except ConfigError as exc:
                print(f"  {scenario:9} {matching:5} match  {name:40} skipped: {exc}")
                continue
            router = Router(registry, SubsetMatcher(), pm, upstream=None, pipeline=pipeline)  # type: ignore[arg-type]
            best, median = measure(router, args.decisions, requests(query), args.rounds)
            # the target is set for many replicas registered; the engine scenarios show what reports cost
            verdict = "  over the target" if best > TARGET_MICROS and scenario in ("spread", "all") else ""
            print(f"  {scenario:9} {matching:5} match  {name:40} {best:8.1f} µs  (median {median:.1f}){verdict}")


if __name__ == "__main__":
    main()
