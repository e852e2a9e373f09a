"""The lock-free series the router and the agent count in expose exactly what prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from anyserve.metric_names import MetricSpec
from anyserve.metric_series import Series

BUCKETS = (0.01, 0.1, 0.5, 1.0)
VALUES = (0.0, 0.01, 0.05, 0.1, 0.5, 0.7, 1.0, 3.0)


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_counters_and_histograms_match_prometheus_clients_own():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    requests = Series(MetricSpec("t_requests_total", "counter", "Requests.", ("code",)))
    latency = Series(MetricSpec("t_seconds", "histogram", "Latency.", ("code",)), BUCKETS)
    ours.register(requests)
    ours.register(latency)
    their_requests = Counter("t_requests", "Requests.", ["code"], registry=theirs)
    their_latency = Histogram("t_seconds", "Latency.", ["code"], registry=theirs, buckets=BUCKETS)
    for code in ("200", "404"):
        for value in VALUES:
            requests.labels(code).inc()
            latency.labels(code).observe(value)
            their_requests.labels(code).inc()
            their_latency.labels(code).observe(value)
    assert _samples(ours) == _samples(theirs)


def test_an_unlabelled_counter_shows_zero_before_its_first_count():
    registry = CollectorRegistry()
    registry.register(Series(MetricSpec("t_delegations_total", "counter", "Delegations.")))
    assert ("t_delegations_total", (), 0.0) in _samples(registry)
