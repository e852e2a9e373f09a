"""What one routing decision costs in the router, with many replicas registered.

In-process, no sockets: a registry of N replicas and the router's own
choice (:meth:`anyserve_router.forwarding.Router.pick`: matching through the
router's match cache, candidates with their load signals, then the routing
pipeline), timed over many decisions after a warm-up. Each replica offers
one chat model; scenarios differ in how many of them match a request:

* ``spread``: 1,000 replicas over 100 models, 10 match (routing by capability);
* ``all``: 1,000 replicas of one model, all 1,000 match (the worst case);

each with the default pipeline and with the LLM scorers (prefix and session
affinity on an OpenAI-sized prompt, when installed)::

    .venv/bin/python bench/routing_decision.py [--replicas 1000] [--decisions 20000]

Prints microseconds per decision; the target is at most 50 µs with 1,000
replicas registered.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

from anyserve.builtins.subset import SubsetMatcher
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError
from anyserve.plugins import create_plugin_manager
from anyserve.routing import RouteRequest, build_pipeline
from anyserve_router.forwarding import Router
from anyserve_router.registry import ReplicaRegistry

#: A system prompt of about 1,000 tokens, and one user turn: what a chat request routed by prefix carries.
PROMPT = "system\x1f" + "You are a careful assistant for a support desk. " * 90 + "\x1euser\x1fHow do I reset it?\x1e"

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


def requests(query: Mapping[str, str]) -> Callable[[], RouteRequest]:
    """A chat request's routing view each call: 32 users taking turns, each with the same long prompt."""
    turns = itertools.count()

    def make() -> RouteRequest:
        return RouteRequest(query, False, f"user-{next(turns) % 32}", PROMPT)

    return make


def measure(router: Router, decisions: int, make: Any) -> float:
    for _ in range(min(2000, decisions)):  # warm: caches filled, as in a running router
        router.pick(make().query, route=make())
    started = time.perf_counter()
    for _ in range(decisions):
        route = make()
        router.pick(route.query, route=route)
    return (time.perf_counter() - started) / decisions * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=20000)
    args = parser.parse_args()
    pm = create_plugin_manager(entrypoints=False, env={})
    catalog = Catalog(pm)
    print(f"{args.replicas} replicas registered; µs per decision (Router.pick), {args.decisions} decisions each")
    for scenario, models in (("spread", max(1, args.replicas // 10)), ("all", 1)):
        registry = registry_of(args.replicas, models)
        query = {"type": "chat", "model": "m0"}
        matching = sum(1 for i in range(args.replicas) if i % models == 0)
        for name, env in PIPELINES.items():
            try:
                pipeline = build_pipeline(catalog, load_settings(env=dict(env)))
            except ConfigError as exc:
                print(f"  {scenario:6} {matching:5} match  {name:40} skipped: {exc}")
                continue
            router = Router(registry, SubsetMatcher(), pm, upstream=None, pipeline=pipeline)  # type: ignore[arg-type]
            micros = measure(router, args.decisions, requests(query))
            print(f"  {scenario:6} {matching:5} match  {name:40} {micros:8.1f} µs")


if __name__ == "__main__":
    main()
