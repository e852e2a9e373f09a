"""A replica's answers to ``grpc.health.v1`` health checks, and reflection on its gRPC port.

Service names, and what each answers:

``""`` and ``inference.GRPCInferenceService``
    The whole replica: SERVING exactly when KServe ``ServerReady`` says
    ready — the agent has started (and is not shutting down) and offers at
    least one capability, hot or startable.

``<type>`` or ``<type>/<model>`` (a KServe model name, then a version)
    One capability, named as a stock KServe client names it: the text before
    the first ``/`` is the model name and the rest the version, turned into a
    query by the agent's own rule (``model_name`` -> ``type``,
    ``model_version`` -> ``model``). ``chat`` is ``{type: chat}``,
    ``chat/llama-70b`` is ``{type: chat, model: llama-70b}``. Matching is the
    replica's configured matcher, so ``chat`` matches any chat capability.

    * NOT_FOUND (Check) / SERVICE_UNKNOWN (Watch): nothing the app declares —
      no plain handler, no worker class, unary or streaming — matches.
    * SERVING: a request for it now would get a worker: a running worker
      serves it, or a worker class that matches it is ``cold``, ``starting``,
      ``hot`` or ``stopping`` (a cold class starts on demand, and a crashed
      one is restarted, so it *will* be served).
    * NOT_SERVING: otherwise — every plain worker serving it is down (killed
      or crashed, until the supervisor's restart completes its handshake)
      or leaves its liveness probes unanswered (:mod:`anyserve.replica.liveness`),
      or the matching worker class is ``failed`` (a request would get
      UNAVAILABLE until its retry time) — and every known service while the
      agent is not ready (before start, and from the start of shutdown).

The replica's own state is read at call time through the agent, its worker
pool and the lifecycle, choosing a worker the way a request does, so health
cannot drift from what requests get.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from anyserve.app import AnyServe
from anyserve.capability import normalize_value
from anyserve.protocol.health import HealthServicer, add_health, enable_reflection
from anyserve.protocol.names import INFERENCE_SERVICE
from anyserve.transport import Query

if TYPE_CHECKING:
    from anyserve.replica.agent import Agent


def query_for(agent: Agent, service: str) -> Query:
    """The capability query a health service name stands for (``type`` or ``type/model``)."""
    name, _, version = service.partition("/")
    return agent.model_query(name, version)


def declared(agent: Agent, app: AnyServe, query: Query) -> bool:
    """Whether the app declares a capability matching ``query`` (running or not, of either kind).

    From the app rather than the pool: a plain worker that died has left the
    pool, yet its capability is still this replica's, only not served now.
    """
    matcher = agent.pool.matcher
    return any(matcher.score(capability, query) is not None for capability in app.capabilities())


def capability_status(agent: Agent, app: AnyServe, service: str) -> bool | None:
    """The status of one capability service name; None when the app declares nothing matching it."""
    query = query_for(agent, service)
    if not query or not declared(agent, app, query):
        return None  # an empty query ("/") would match everything: it names no capability
    # A running worker, or the worker class a request would start unless it is failed and not yet due for a retry.
    return agent.ready and agent.servable(query, failed=False)


class ReplicaHealth:
    """The replica's status function and service list, for :class:`~anyserve.protocol.health.HealthServicer`."""

    def __init__(self, agent: Agent, app: AnyServe) -> None:
        self.agent = agent
        self.app = app

    def status(self, service: str) -> bool | None:
        if service in ("", INFERENCE_SERVICE):
            return self.agent.is_ready()
        return capability_status(self.agent, self.app, service)

    def services(self) -> Iterator[str]:
        """The whole replica, then each declared capability with a ``type``, by its KServe name."""
        yield ""
        yield INFERENCE_SERVICE
        for capability in self.app.capabilities():
            attrs = capability.to_dict()
            if "type" in attrs:
                model = f"/{normalize_value(attrs['model'])}" if "model" in attrs else ""
                yield normalize_value(attrs["type"]) + model


def serve_health(server: grpc.aio.Server, agent: Agent, app: AnyServe) -> HealthServicer:
    """Add ``grpc.health.v1.Health`` and server reflection to a replica's ``server`` (before it starts).

    Returns the servicer; call its ``shutdown()`` as the replica stops so
    open watches end instead of holding the stop for its grace period.
    """
    health = ReplicaHealth(agent, app)
    servicer = HealthServicer(health.status, services=health.services)
    add_health(server, servicer)
    enable_reflection(server, (INFERENCE_SERVICE,))
    return servicer
