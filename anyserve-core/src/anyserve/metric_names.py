"""Every Prometheus metric anyserve exposes: its name, kind, labels and meaning, in one table.

The router's ``/metrics`` and each replica agent's serve these; the
console, ``anyserve top``, the Grafana dashboard in ``deploy/`` and
docs/observability.md read the names from here, so a metric renamed here
is renamed everywhere, and a dashboard naming one that does not exist
fails its test.

Names follow Prometheus conventions: an ``anyserve_`` prefix, then the
process (``router_``, ``replica_``, ``worker_``, ``objects_``), base units
(``_seconds``, ``_bytes``), ``_total`` on counters. Where a peer's metric
means the same, ``mirrors`` names it (vLLM's ``vllm:``, Triton's
``nv_inference_``, Ray Serve's ``ray_serve_``, the SGLang gateway's
``smg_``), for the table in docs/observability.md.

Label values are bounded: ``capability`` is the capability a request was
routed to as registered (``type=chat,model=x``), never what a client
typed, and requests that matched nothing count under ``unmatched``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

#: Label value for requests that matched no registered capability.
UNMATCHED = "unmatched"
#: Fronts a request can arrive by.
FRONTS = ("kserve", "openai", "grpc")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    #: A peer's metric with the same meaning, if any.
    mirrors: str = ""


ROUTER: tuple[MetricSpec, ...] = (
    MetricSpec(
        "anyserve_router_requests_total", "counter", "Requests answered by the router, by front, capability and "
        "status code.", ("front", "capability", "code"), "ray_serve_num_http_requests_total",
    ),
    MetricSpec(
        "anyserve_router_request_duration_seconds", "histogram", "Time from a request's arrival to its last byte "
        "sent (a stream: its end).", ("front", "capability"), "vllm:e2e_request_latency_seconds",
    ),
    MetricSpec(
        "anyserve_router_time_to_first_token_seconds", "histogram", "Streams: arrival to the first token sent.",
        ("front", "capability"), "vllm:time_to_first_token_seconds",
    ),
    MetricSpec(
        "anyserve_router_inter_token_latency_seconds", "histogram", "Streams: time between two tokens sent.",
        ("front", "capability"), "vllm:inter_token_latency_seconds",
    ),
    MetricSpec(
        "anyserve_router_prompt_tokens_total", "counter", "Prompt tokens of answered LLM requests (from usage).",
        ("capability",), "vllm:prompt_tokens_total",
    ),
    MetricSpec(
        "anyserve_router_generation_tokens_total", "counter", "Generated tokens of answered LLM requests (from "
        "usage).", ("capability",), "vllm:generation_tokens_total",
    ),
    MetricSpec(
        "anyserve_router_requests_in_flight", "gauge", "Requests the router is serving now.", ("front",),
        "smg_http_requests_active",
    ),
    MetricSpec("anyserve_router_delegations_total", "counter", "Requests a replica delegated back to the router."),
    MetricSpec("anyserve_router_replicas", "gauge", "Live registered replicas."),
    MetricSpec("anyserve_router_capabilities", "gauge", "Capabilities offered by live replicas."),
    MetricSpec(
        "anyserve_router_routing_decision_seconds", "histogram", "Time to choose a replica for a request.", (),
        "smg_router_selection_duration_seconds",
    ),
    MetricSpec(
        "anyserve_router_replica_in_flight", "gauge", "Requests out to each replica, as the router counts them.",
        ("replica",),
    ),
)  # fmt: skip

REPLICA: tuple[MetricSpec, ...] = (
    MetricSpec(
        "anyserve_replica_requests_total", "counter", "Requests a replica's agent answered, by capability and status "
        "code (gRPC code name).", ("capability", "code"), "nv_inference_request_success",
    ),
    MetricSpec(
        "anyserve_replica_request_duration_seconds", "histogram", "Time from a request's arrival at the agent to its "
        "answer (a stream: its end).", ("capability",), "nv_inference_request_duration_us",
    ),
    MetricSpec(
        "anyserve_replica_requests_in_flight", "gauge", "Requests the agent has out to its workers now.", (),
        "vllm:num_requests_running",
    ),
    MetricSpec(
        "anyserve_replica_requests_queued", "gauge", "Requests waiting for a worker (starting, or at its concurrency).",
        (), "vllm:num_requests_waiting",
    ),
    MetricSpec(
        "anyserve_worker_state", "gauge", "1 for each worker class's current state (cold, starting, hot, stopping, "
        "failed), else 0.", ("worker_class", "state"),
    ),
    MetricSpec("anyserve_worker_switches_total", "counter", "Worker class starts.", ("worker_class",)),
    MetricSpec(
        "anyserve_worker_switch_seconds", "histogram", "Time from a worker class's start to ready.", ("worker_class",),
    ),
    MetricSpec("anyserve_objects_bytes", "gauge", "Bytes held in the object store (what this replica can see)."),
    MetricSpec("anyserve_objects", "gauge", "Objects held in the object store."),
    MetricSpec("anyserve_objects_expired_total", "counter", "Objects removed for their age by the collector."),
)  # fmt: skip

ALL: tuple[MetricSpec, ...] = ROUTER + REPLICA
NAMES: frozenset[str] = frozenset(spec.name for spec in ALL)


def capability_label(capability: dict[str, str] | None) -> str:
    """The ``capability`` label of a registered capability: ``key=value`` pairs in key order, or ``unmatched``."""
    if not capability:
        return UNMATCHED
    return ",".join(f"{key}={capability[key]}" for key in sorted(capability))
