"""Labelled counters and histograms kept as plain numbers by one event loop, exposed through prometheus_client.

prometheus_client's own ``Counter`` and ``Histogram`` take a lock on every
increment (and a histogram walks its buckets one by one, locking each it
touches): what a metric shared by threads needs. The router's and the
agent's request paths run in one event loop thread, which is also where
``/metrics`` is answered, so their counts need no lock: an increment here
is one addition on a slot object, an observation one ``bisect`` and two
additions, a few times cheaper than prometheus_client's. A scrape turns
them into metric families (:class:`Series` is a prometheus_client
collector), cumulating the buckets then.

Only the loop that owns a series may change it; a thread that counts
(the object collector's expiries) changes a child no one else changes,
which Python's attribute assignment keeps whole.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from anyserve.metric_names import MetricSpec


class Count:
    """One counter child."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Buckets:
    """One histogram child: the count per bucket (not cumulated; the last one is ``+Inf``) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # first bound >= value: Prometheus's ``le``
        self.sum += value


class Series(Collector):
    """One metric of ``spec``: its children by label values, collected at scrape time."""

    def __init__(self, spec: MetricSpec, buckets: Sequence[float] = ()) -> None:
        if spec.kind not in ("counter", "histogram"):
            raise ValueError(f"{spec.name} is a {spec.kind}: gauges are read at scrape time, not kept")
        if spec.kind == "histogram" and not buckets:
            raise ValueError(f"{spec.name} is a histogram: give its buckets")
        self.spec = spec
        self.bounds = tuple(float(b) for b in sorted(buckets))
        self.children: dict[tuple[str, ...], Count | Buckets] = {}
        if not spec.labels:
            self.labels()  # shown as 0 before the first count, as prometheus_client shows it

    def labels(self, *values: str) -> Count | Buckets:
        """The child for ``values`` (one per label, in the spec's order), made on first use."""
        if len(values) != len(self.spec.labels):
            raise ValueError(f"{self.spec.name} takes labels {self.spec.labels}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = Count() if self.spec.kind == "counter" else Buckets(self.bounds)
            self.children[values] = child
        return child

    def collect(self) -> Iterator[Metric]:
        spec = self.spec
        labels = list(spec.labels)
        if spec.kind == "counter":
            family = CounterMetricFamily(spec.name, spec.help, labels=labels)
            for values, child in list(self.children.items()):
                assert isinstance(child, Count)
                family.add_metric(list(values), child.value)
            yield family
            return
        histogram = HistogramMetricFamily(spec.name, spec.help, labels=labels)
        edges = [*(_le(b) for b in self.bounds), "+Inf"]
        for values, child in list(self.children.items()):
            assert isinstance(child, Buckets)
            running, cumulated = 0, []
            for edge, count in zip(edges, list(child.counts), strict=True):
                running += count
                cumulated.append((edge, running))
            histogram.add_metric(list(values), cumulated, child.sum)
        yield histogram


def _le(bound: float) -> str:
    """A bucket's ``le`` as prometheus_client writes it (``0.5``, ``1.0``)."""
    return repr(float(bound))
