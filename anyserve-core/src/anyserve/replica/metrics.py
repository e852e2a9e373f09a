"""A replica's Prometheus metrics (names from :mod:`anyserve.metric_names`), its workers' figures included.

The agent's request path pays one counter increment and one histogram
observation per request, each a lock-free addition
(:mod:`anyserve.metric_series`: the agent counts in its event loop thread,
which also answers the scrape); the capability label is the registered
capability of the handler that served it, made once per worker and
handler, never from what a client asked. What describes the replica's
state (requests out to workers, worker class states, the object store's
size) is read when Prometheus scrapes, not kept up to date per request.

Workers count in prometheus_client's multiprocess mode: the agent gives
them ``PROMETHEUS_MULTIPROC_DIR``, a private (0700) directory under the
replica's run directory, emptied when the agent starts and removed when it
stops; a handler's own ``prometheus_client.Counter`` (or any metric) is
written there and the agent's ``/metrics`` adds them up with
``MultiProcessCollector``. Files of workers that died are marked dead
(``multiprocess.mark_process_dead``) at the next scrape, so their live
gauges go while their counters stay counted. The agent's own metrics are
plain in-process ones in a registry of its own: prometheus_client is
imported here before the variable is set, and the variable is given to the
workers only, never set in the agent's environment. Handlers that run in
the agent itself (the ``inproc`` transport) count in prometheus_client's
default registry, which the agent's ``/metrics`` then includes instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anyserve.candidates import COLD, FAILED, HOT, STARTING, STOPPING
from anyserve.capability import RUNTIME_KEYS
from anyserve.metric_names import REPLICA, UNMATCHED, MetricSpec, capability_label
from anyserve.metric_series import Series

if TYPE_CHECKING:
    from anyserve.replica.pool import WorkerSlot

SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in REPLICA}
#: The variable that puts a worker's prometheus_client in multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATES = (COLD, STARTING, HOT, STOPPING, FAILED)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SWITCH_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: Labelled children kept at most; past it, new combinations share one overflow series.
MAX_CHILDREN = 10_000
_PID = re.compile(r"_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerFigures:
    """The workers' multiprocess directory: made empty and private, read at scrape, removed at the end."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, "metrics")
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path, mode=0o700)
        os.chmod(self.path, 0o700)  # whatever the umask
        self._dead: set[int] = set()

    def env(self) -> dict[str, str]:
        """What a worker's environment gets."""
        return {MULTIPROC_ENV: self.path}

    def sweep(self) -> None:
        """Mark the files of workers that are gone as dead: their live gauges go, their counters stay."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                found = _PID.search(name)
                if found is None:
                    continue
                pid = int(found.group(1))
                if pid in self._dead or pid == os.getpid() or _pid_alive(pid):
                    continue
                multiprocess.mark_process_dead(pid, self.path)
                self._dead.add(pid)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _ScrapeTime(Collector):
    """The gauges read when scraped: requests out to workers, queued requests, class states, the object store."""

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        spec = SPECS["anyserve_replica_requests_in_flight"]
        yield GaugeMetricFamily(spec.name, spec.help, m.in_flight())
        spec = SPECS["anyserve_replica_requests_queued"]
        yield GaugeMetricFamily(spec.name, spec.help, m.queued)
        spec = SPECS["anyserve_worker_state"]
        states = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        for name, current in m.worker_states():
            for state in STATES:
                states.add_metric([name, state], 1.0 if state == current else 0.0)
        yield states
        if m.object_bytes is not None:
            spec = SPECS["anyserve_objects_bytes"]
            yield GaugeMetricFamily(spec.name, spec.help, m.object_bytes)
        if m.object_count is not None:
            spec = SPECS["anyserve_objects"]
            yield GaugeMetricFamily(spec.name, spec.help, m.object_count)


class ReplicaMetrics:
    """Every replica metric, the cheap calls that feed them, and the exposition the endpoint serves."""

    def __init__(
        self,
        in_flight: Callable[[], int] = lambda: 0,
        worker_states: Callable[[], Iterable[tuple[str, str]]] = tuple,
        workers: WorkerFigures | None = None,
        *,
        in_process: bool = False,
        counting: bool = True,
    ) -> None:
        self.in_flight = in_flight
        self.worker_states = worker_states
        self.workers = workers
        #: False when no ``/metrics`` is served (``replica.metrics_port = -1``): requests go uncounted.
        self.counting = counting
        #: Handlers run in the agent (the ``inproc`` transport): their metrics are in prometheus_client's own registry.
        self.in_process = in_process
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Series(SPECS["anyserve_replica_requests_total"])
        self.duration = Series(SPECS["anyserve_replica_request_duration_seconds"], DURATION_BUCKETS)
        self.switches = Series(SPECS["anyserve_worker_switches_total"])
        self.switch_seconds = Series(SPECS["anyserve_worker_switch_seconds"], SWITCH_BUCKETS)
        expired = Series(SPECS["anyserve_objects_expired_total"])
        for series in (self.requests, self.duration, self.switches, self.switch_seconds, expired):
            r.register(series)
        self.expired = expired.labels()
        r.register(_ScrapeTime(self))
        #: Requests waiting for a worker now.
        self.queued = 0
        #: What the object store's collector last saw; None: not known (no collector, or a store that cannot say).
        self.object_bytes: int | None = None
        self.object_count: int | None = None
        #: (capability, code) -> (requests child, duration child).
        self._answered: dict[tuple[str, str], tuple[Any, Any]] = {}
        #: (id(slot), handler) -> (the slot, its handler's capability label).
        self._labels: dict[tuple[int, int], tuple[Any, str]] = {}

    # -- the request path -------------------------------------------------------------

    def label(self, slot: WorkerSlot, handler: int) -> str:
        """The registered capability of ``slot``'s handler ``handler``, made once per worker and handler."""
        cached = self._labels.get((id(slot), handler))
        if cached is not None and cached[0] is slot:
            return cached[1]
        if len(self._labels) >= MAX_CHILDREN:
            self._labels.clear()
        label = UNMATCHED
        offers = slot.connection.hello.get("capabilities", [])
        if 0 <= handler < len(offers):
            attrs = {str(k): str(v) for k, v in offers[handler].items() if k not in RUNTIME_KEYS}
            label = capability_label(attrs)
        self._labels[(id(slot), handler)] = (slot, label)
        return label

    def answered(self, capability: str, code: str, seconds: float) -> None:
        if not self.counting:
            return
        children = self._answered.get((capability, code))
        if children is None:
            if len(self._answered) >= MAX_CHILDREN:
                capability, code = UNMATCHED, "overflow"
            children = (self.requests.labels(capability, code), self.duration.labels(capability))
            self._answered[(capability, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    # -- state changes ----------------------------------------------------------------------

    def switched(self, worker_class: str, action: str, seconds: float) -> None:
        """A worker class started (counted and timed) or stopped (not counted: a switch is a start)."""
        if action == "start":
            self.switches.labels(worker_class).inc()
            self.switch_seconds.labels(worker_class).observe(seconds)

    def objects_seen(self, removed: int, listing: Callable[[], Iterable[Any]] | None) -> None:
        """One pass of the object collector: what it removed, and the store's size where it can say."""
        if removed > 0:
            self.expired.inc(removed)
        if listing is None:
            return
        try:
            refs = list(listing())
        except Exception:  # a store that cannot list: its size stays unknown
            return
        sizes = [ref.size for ref in refs if getattr(ref, "size", None) is not None]
        self.object_count = len(refs)
        self.object_bytes = sum(sizes) if len(sizes) == len(refs) else None

    # -- the endpoint -------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format: the agent's metrics, then the workers' added up (handlers in the agent: its own)."""
        text = generate_latest(self.registry)
        if self.in_process:
            return text + generate_latest(REGISTRY)
        if self.workers is None or not os.path.isdir(self.workers.path):
            return text
        self.workers.sweep()
        workers = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(workers, path=self.workers.path)
        return text + generate_latest(workers)
