"""What ``anyserve top`` computes from two scrapes of the router's ``/metrics``: rates and latency percentiles.

Rates are the difference of two counters over the seconds between the
scrapes (a counter that went down means the router restarted: its value is
the increase). Percentiles are estimated from histogram buckets the way
Prometheus's ``histogram_quantile`` does: linear within the bucket the rank
falls in, over the buckets' increase between the scrapes, or over all
observations since the router started when none fell between them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from anyserve.metric_names import ROUTER

_SPECS = {spec.name: spec for spec in ROUTER}
REQUESTS = _SPECS["anyserve_router_requests_total"].name
DURATION = _SPECS["anyserve_router_request_duration_seconds"].name
TTFT = _SPECS["anyserve_router_time_to_first_token_seconds"].name
ITL = _SPECS["anyserve_router_inter_token_latency_seconds"].name
PROMPT_TOKENS = _SPECS["anyserve_router_prompt_tokens_total"].name
GENERATION_TOKENS = _SPECS["anyserve_router_generation_tokens_total"].name
IN_FLIGHT = _SPECS["anyserve_router_requests_in_flight"].name
DELEGATIONS = _SPECS["anyserve_router_delegations_total"].name
REPLICAS = _SPECS["anyserve_router_replicas"].name
CAPABILITIES = _SPECS["anyserve_router_capabilities"].name
DECISION = _SPECS["anyserve_router_routing_decision_seconds"].name

#: gRPC status names that are the server's failure, not the caller's (as 5xx are for HTTP).
SERVER_ERRORS = frozenset({"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS"})

Labels = tuple[tuple[str, str], ...]


def is_error(code: str) -> bool:
    """A server-side failure: an HTTP 5xx, or a gRPC status that means the same."""
    return code.startswith("5") or code in SERVER_ERRORS


@dataclass
class Scrape:
    """One ``/metrics`` answer: every sample by its name and labels, taken at ``at`` (monotonic seconds)."""

    at: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: dict[str, dict[Labels, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
        return cls(at, dict(samples))

    def series(self, name: str) -> dict[Labels, float]:
        return self.samples.get(name, {})

    def total(self, name: str, **match: str) -> float:
        """The sum of ``name``'s samples whose labels include ``match``."""
        return sum(value for labels, value in self.series(name).items() if _matches(labels, match))

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for labels in self.series(name) if label in dict(labels)}


def _matches(labels: Labels, match: dict[str, str]) -> bool:
    if not match:
        return True
    have = dict(labels)
    return all(have.get(key) == value for key, value in match.items())


def increase(before: float | None, after: float) -> float:
    """A counter's increase; a counter that went down was reset (the router restarted), so all of it is new."""
    if before is None or after < before:
        return after
    return after - before


@dataclass
class Window:
    """Two scrapes: what happened between them (``before`` None: only since the router started)."""

    before: Scrape | None
    after: Scrape

    @property
    def seconds(self) -> float | None:
        return None if self.before is None else max(self.after.at - self.before.at, 1e-9)

    def rate(self, name: str, predicate: Iterable[tuple[str, str]] = (), *, errors_only: bool = False) -> float | None:
        """Per second, of the samples whose labels include ``predicate`` (and, for ``errors_only``, an error code);
        ``None`` before a second scrape, or when no such series exists."""
        seconds = self.seconds
        if seconds is None or self.before is None:
            return None
        match = dict(predicate)
        earlier = self.before.series(name)
        total = 0.0
        found = False
        for labels, value in self.after.series(name).items():
            if not _matches(labels, match):
                continue
            found = True
            if errors_only and not is_error(dict(labels).get("code", "")):
                continue
            total += increase(earlier.get(labels), value)
        return total / seconds if found else None

    def quantiles(self, name: str, qs: Iterable[float], **match: str) -> tuple[list[float | None], bool]:
        """``name``'s quantiles over the window, summed across labels matching ``match``; and whether the window
        held any observation (else they are over everything since the router started)."""
        after = _buckets(self.after, name, match)
        if self.before is not None:
            before = _buckets(self.before, name, match)
            window = {le: increase(before.get(le), count) for le, count in after.items()}
            if window.get(math.inf, 0) > 0:
                return [bucket_quantile(q, window) for q in qs], True
        return [bucket_quantile(q, after) for q in qs], False


def _buckets(scrape: Scrape, name: str, match: dict[str, str]) -> dict[float, float]:
    """Cumulative counts by upper bound (``le``), summed over the series matching ``match``."""
    out: dict[float, float] = defaultdict(float)
    for labels, value in scrape.series(name + "_bucket").items():
        have = dict(labels)
        if _matches(labels, match):
            out[float(have["le"])] += value
    return dict(out)


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` ({upper bound: count}), as Prometheus estimates it.

    ``None`` with no observations. A rank in the ``+Inf`` bucket answers the
    highest finite bound (nothing better is known).
    """
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
