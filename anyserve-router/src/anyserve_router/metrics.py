"""The router's Prometheus metrics (names from :mod:`anyserve.metric_names`) and its ``GET /metrics``.

The request path pays for one counter increment and one histogram
observation per request, plus the routing decision's observation, each a
lock-free addition (:mod:`anyserve.metric_series`: the router counts in
one event loop thread, which also answers the scrape); the labelled
children are bound once per label combination and kept in dicts keyed by
the label values as they come (the HTTP status an int, the
capability the label string cached per offer), so no label string is
built per request. Gauges that describe the registry (live replicas,
capabilities, each replica's in-flight count as the leases hold it) and
the in-flight count per front (a plain int the request path bumps) are
read when Prometheus scrapes, by a collector, not kept up to date per
request.

Label values are bounded: the ``capability`` label is the capability of
the offer the request was routed to as its replica registered it (cached
per offer), never the client's query; a request that matched nothing is
``unmatched``. What a client types cannot add a series.

Each :class:`RouterMetrics` has a registry of its own, so several router
apps in one process (tests) never collide in prometheus_client's global one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from anyserve.credentials import Credentials
from anyserve.errors import NotFound
from anyserve.metric_names import FRONTS, ROUTER, UNMATCHED, MetricSpec, capability_label
from anyserve.metric_series import Series
from anyserve_router.control_auth import require_admin

if TYPE_CHECKING:
    from anyserve_router.registry import ReplicaRegistry

KSERVE_FRONT, OPENAI_FRONT, GRPC_FRONT = FRONTS
SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in ROUTER}
#: Seconds: from a fast in-process echo to a long generation.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10)
DECISION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1)
#: Labelled children kept at most per metric; past it, new combinations share one overflow series.
MAX_CHILDREN = 10_000

#: The capability label of the offer this request was routed to (set where the replica is chosen).
ROUTED: ContextVar[str] = ContextVar("anyserve_router_routed", default=UNMATCHED)


def _series(name: str, registry: CollectorRegistry, buckets: tuple[float, ...] = ()) -> Series:
    series = Series(SPECS[name], buckets)
    registry.register(series)
    return series


class _ScrapeTime(Collector):
    """The gauges read when scraped: the registry's replicas and leases, the fronts' in-flight counts."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        registry = self.metrics.replicas
        flight = GaugeMetricFamily(
            "anyserve_router_requests_in_flight", SPECS["anyserve_router_requests_in_flight"].help, labels=["front"]
        )
        for front, count in self.metrics.in_flight.items():
            flight.add_metric([front], count)
        yield flight
        if registry is None:
            return
        yield GaugeMetricFamily(
            "anyserve_router_replicas", SPECS["anyserve_router_replicas"].help, len(registry.live_ids())
        )
        yield GaugeMetricFamily(
            "anyserve_router_capabilities",
            SPECS["anyserve_router_capabilities"].help,
            len(registry.known_capabilities()),
        )
        leases = GaugeMetricFamily(
            "anyserve_router_replica_in_flight", SPECS["anyserve_router_replica_in_flight"].help, labels=["replica"]
        )
        for entry in registry.snapshot():
            leases.add_metric([entry["replica_id"]], entry["router_in_flight"])
        yield leases


class RouterMetrics:
    """Every router metric, and the cheap per-request calls that feed them."""

    def __init__(self, replicas: ReplicaRegistry | None = None, *, enabled: bool = True) -> None:
        self.replicas = replicas
        #: ``router.metrics``: off, the fronts and the forwarding count nothing and ``/metrics`` answers 404.
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = _series("anyserve_router_requests_total", r)
        self.duration = _series("anyserve_router_request_duration_seconds", r, DURATION_BUCKETS)
        self.ttft = _series("anyserve_router_time_to_first_token_seconds", r, DURATION_BUCKETS)
        self.itl = _series("anyserve_router_inter_token_latency_seconds", r, TOKEN_BUCKETS)
        self.prompt_tokens = _series("anyserve_router_prompt_tokens_total", r)
        self.generation_tokens = _series("anyserve_router_generation_tokens_total", r)
        self.delegations = _series("anyserve_router_delegations_total", r).labels()
        self.decision = _series("anyserve_router_routing_decision_seconds", r, DECISION_BUCKETS).labels()
        r.register(_ScrapeTime(self))
        #: Requests being served now, per front (read at scrape time).
        self.in_flight: dict[str, int] = dict.fromkeys(FRONTS, 0)
        #: (front, capability, code) -> (requests child, duration child).
        self._answered: dict[tuple[str, str, Any], tuple[Any, Any]] = {}
        #: (front, capability) -> (ttft child, itl child).
        self._streamed: dict[tuple[str, str], tuple[Any, Any]] = {}
        #: capability -> (prompt child, generation child).
        self._tokens: dict[str, tuple[Any, Any]] = {}
        #: id(Capability) -> (the capability, its label): one label string per offer, not per request.
        self._labels: dict[int, tuple[Any, str]] = {}

    # -- the request path -------------------------------------------------------------

    def label(self, capability: Any) -> str:
        """The capability label of a registered offer's capability, made once per offer."""
        if capability is None:
            return UNMATCHED
        cached = self._labels.get(id(capability))
        if cached is not None and cached[0] is capability:
            return cached[1]
        if len(self._labels) >= MAX_CHILDREN:
            self._labels.clear()  # offers of replicas long gone; the live ones come back on their next request
        label = capability_label({str(k): str(v) for k, v in capability.items()})
        self._labels[id(capability)] = (capability, label)
        return label

    def answered(self, front: str, capability: str, code: Any, seconds: float) -> None:
        """One request answered: its count and its duration."""
        children = self._answered.get((front, capability, code))
        if children is None:
            children = self._bind_answered(front, capability, code)
        children[0].inc()
        children[1].observe(seconds)

    def _bind_answered(self, front: str, capability: str, code: Any) -> tuple[Any, Any]:
        if len(self._answered) >= MAX_CHILDREN:
            capability, code = UNMATCHED, "overflow"
        children = (self.requests.labels(front, capability, str(code)), self.duration.labels(front, capability))
        self._answered[(front, capability, code)] = children
        return children

    def _stream_children(self, front: str, capability: str) -> tuple[Any, Any]:
        children = self._streamed.get((front, capability))
        if children is None:
            children = (self.ttft.labels(front, capability), self.itl.labels(front, capability))
            self._streamed[(front, capability)] = children
        return children

    def first_token(self, front: str, capability: str, seconds: float) -> None:
        self._stream_children(front, capability)[0].observe(seconds)

    def next_token(self, front: str, capability: str, seconds: float) -> None:
        self._stream_children(front, capability)[1].observe(seconds)

    def tokens(self, prompt: int, generated: int) -> None:
        """An LLM answer's usage, counted under the capability this request was routed to."""
        capability = ROUTED.get()
        children = self._tokens.get(capability)
        if children is None:
            children = (self.prompt_tokens.labels(capability), self.generation_tokens.labels(capability))
            self._tokens[capability] = children
        if prompt > 0:
            children[0].inc(prompt)
        if generated > 0:
            children[1].inc(generated)

    def token(self, front: str, begun: float, last: float) -> float:
        """A streamed chunk sent now: time to first token (``last`` 0) or since the last one; returns now.

        The bridge writes events that arrived together in one chunk, so the
        gap is between writes, which is what the client sees.
        """
        now = time.perf_counter()
        if last:
            self.next_token(front, ROUTED.get(), now - last)
        else:
            self.first_token(front, ROUTED.get(), now - begun)
        return now

    # -- the endpoint -------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Uncounted:
    """What a front counts with when ``router.metrics = false``: the same calls, doing nothing."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = dict.fromkeys(FRONTS, 0)

    def answered(self, front: str, capability: str, code: Any, seconds: float) -> None:
        pass

    def first_token(self, front: str, capability: str, seconds: float) -> None:
        pass

    def next_token(self, front: str, capability: str, seconds: float) -> None:
        pass


UNCOUNTED: Any = _Uncounted()


def metrics_endpoint(metrics: RouterMetrics, credentials: Credentials) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: admin token only (open with ``[cluster] auth = "off"``); the answer is bounded by the series.

    The series are bounded (capability labels come from registered offers,
    replicas from the registry's own limits), so the text is too; a caller
    without the admin token gets 401, with only the cluster token 403.
    """

    async def scrape(request: Request) -> Response:
        require_admin(request, credentials)
        if not metrics.enabled:
            raise NotFound("metrics are off on this router (router.metrics = false)")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return scrape
