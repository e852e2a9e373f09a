"""Every hook anyserve calls, grouped by category.

This module is the contract between core and plugins. A plugin is any module
(or object) with functions named after these hooks and marked with
``@anyserve.hookimpl``; it is discovered through the ``anyserve`` entry-point
group, exactly like the built-in defaults in :mod:`anyserve.builtins`.

Two shapes of hook:

* *Registration* hooks receive a ``register`` callable (or the object to
  extend) and contribute named records: transports, object backends, stream
  encodings, matchers, capability handlers, CLI commands. Core collects the
  records of every plugin into name -> record maps; configuration then picks
  one by name. Duplicate names are an error naming both plugins.
* *Decision* hooks are ``firstresult``: the first non-``None`` answer wins.
  Core's defaults are ``trylast``, so any installed plugin that answers
  overrides them.

Hooks are called synchronously. Anything slow or heavy (importing an engine,
opening a socket) belongs in the factories the records carry, never in the
hook body itself, because every process (CLI, agent, each worker) calls the
registration hooks at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from anyserve.app import AnyServe
    from anyserve.candidates import Candidate
    from anyserve.delegation import Delegation
    from anyserve.records import (
        MatcherSpec,
        ObjectBackendSpec,
        RoutingStageSpec,
        StreamEncodingSpec,
        TransportSpec,
    )

PROJECT_NAME = "anyserve"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------
# IPC transport
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_transports(register: Callable[[TransportSpec], None]) -> None:
    """Contribute IPC transports that carry requests between agent and workers.

    Called once per process when the plugin catalog is built. Call
    ``register(TransportSpec(name=..., factory=...))`` for each transport.
    ``factory(options)`` receives the ``[transport.options]`` table of the
    configuration and returns an object implementing
    :class:`anyserve.transport.Transport`. The configuration key
    ``transport.name`` (``ANYSERVE_TRANSPORT``, ``--transport``) picks one.
    A transport registered with ``network=True`` serves ``host:port``
    addresses and can also be the router -> replica link (``link.name``,
    ``ANYSERVE_LINK``), with the replica's agent as the served side.

    Every transport must pass :class:`anyserve.testing.TransportContract`.

    Example::

        @hookimpl
        def anyserve_register_transports(register):
            register(TransportSpec(name="unix", factory=lambda options: UnixTransport(**options)))
    """


# --------------------------------------------------------------------------
# Object backend
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_object_backends(register: Callable[[ObjectBackendSpec], None]) -> None:
    """Contribute object-store backends, chosen by the URL scheme they claim.

    Called once per process when the plugin catalog is built. Call
    ``register(ObjectBackendSpec(name=..., schemes=(...), factory=...))``.
    ``factory(url, options)`` returns an :class:`anyserve.objects.ObjectStore`
    for the configured ``objects.url`` (``ANYSERVE_OBJECT_STORE``,
    ``--object-store``). Two backends claiming the same scheme is an error.

    Every backend must pass :class:`anyserve.testing.ObjectStoreContract`.

    Example::

        @hookimpl
        def anyserve_register_object_backends(register):
            register(ObjectBackendSpec(name="s3", schemes=("s3",), factory=open_s3_store))
    """


# --------------------------------------------------------------------------
# Stream encoding
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_stream_encodings(register: Callable[[StreamEncodingSpec], None]) -> None:
    """Contribute encodings that write a stream of responses to an HTTP client.

    Called when the plugin catalog is built. Call
    ``register(StreamEncodingSpec(name=..., media_type=..., factory=...))``;
    ``factory(options)`` returns an :class:`anyserve.encoding.StreamEncoder`.
    The router picks one by ``encoding.name`` (``ANYSERVE_STREAM_ENCODING``)
    for ``POST /infer/stream``.

    Example::

        @hookimpl
        def anyserve_register_stream_encodings(register):
            register(StreamEncodingSpec(name="sse", media_type="text/event-stream",
                                        factory=lambda options: SSEEncoder()))
    """


# --------------------------------------------------------------------------
# Capability matching
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_matchers(register: Callable[[MatcherSpec], None]) -> None:
    """Contribute capability matchers: does an offer satisfy a query, and how well.

    Called when the plugin catalog is built. Call
    ``register(MatcherSpec(name=..., factory=...))``; ``factory(options)``
    returns an :class:`anyserve.matching.Matcher` whose ``score(offered,
    query)`` is ``None`` for "no match" and otherwise a number, higher being
    a better fit. Both the router (choosing replicas) and the agent (choosing
    workers) use the matcher named by ``matcher.name`` (``ANYSERVE_MATCHER``).

    Example::

        @hookimpl
        def anyserve_register_matchers(register):
            register(MatcherSpec(name="glob", factory=lambda options: GlobMatcher()))
    """


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_routing(register: Callable[[RoutingStageSpec], None]) -> None:
    """Contribute stages to the routing pipeline: filters, scorers and pickers.

    Called once per process at start-up. Call ``register`` with a
    :class:`anyserve.records.RoutingStageSpec` per stage; ``kind`` is
    ``"filter"``, ``"scorer"`` or ``"picker"``, and the ``[routing]`` settings
    select stages by ``name`` (scorers with a weight). Core's own stages are
    registered through this same hook. Filters drop candidates, scorers rate
    each in [0, 1], the picker chooses by the weighted totals; see
    :mod:`anyserve.routing.stages` for the protocols.

    Example::

        class Cheapest:
            def score(self, request, candidates):
                return [1.0 if c.info.get("spot") else 0.0 for c in candidates]

        @hookimpl
        def anyserve_register_routing(register):
            register(RoutingStageSpec("spot", "scorer", lambda options: Cheapest()))
    """


@hookspec(firstresult=True)
def anyserve_select_target(query: Mapping[str, Any], candidates: Sequence[Candidate], scope: str) -> Candidate | None:
    """Choose where one request goes among the candidates that match it.

    Called for every request: by the router with ``scope="router"`` (the
    candidates are replicas) and by a replica's agent with ``scope="agent"``
    (the candidates are workers). ``candidates`` is never empty and holds only
    matching targets, each with the matcher's ``score``, its ``in_flight``
    count and its ``state`` (``"hot"``, ``"cold"``, ``"starting"``).

    Return one of the candidates, or ``None`` to let the next implementation
    decide. Stops at first non-None result. An implementation takes the
    routing pipeline's picker's place (:mod:`anyserve.routing`): it is asked
    after the filters and scorers, each candidate carrying the weighted total
    as ``route_score``. Core's default (``trylast``) keeps the best score,
    prefers hot targets, then takes the least loaded in turn; the pipeline
    does not call it. At router scope ``info["endpoint"]`` is the replica's
    gRPC address.

    Example::

        @hookimpl
        def anyserve_select_target(query, candidates, scope):
            if scope == "router":
                return min(candidates, key=lambda c: c.info.get("latency_ms", 0))
    """


# --------------------------------------------------------------------------
# Delegation
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def anyserve_delegate(query: Mapping[str, Any], origin: str, depth: int, router_url: str | None) -> Delegation | None:
    """Decide what a replica does with a request none of its workers can serve.

    Called by the agent when no local capability matches ``query``.
    ``origin`` is this replica's id, ``depth`` how many times the request
    was already delegated, ``router_url`` the configured router (or
    ``None``). Return a :class:`anyserve.delegation.Delegation`: either a
    target (``Delegation.to(url, headers)``) the agent forwards the request
    to, or a refusal (``Delegation.refuse(reason)``) that becomes NOT_FOUND.
    ``None`` lets the next implementation decide. Stops at first non-None
    result. Core's default (``trylast``) hands the request back to the
    router with ``X-Delegated-From`` and ``X-Delegation-Depth`` when a router
    is configured and ``depth`` is still 0, and refuses otherwise: one hop at
    most, so two replicas lacking a capability never loop.
    """


# --------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_capabilities(app: AnyServe) -> None:
    """Contribute capability handlers (or worker classes) to an application.

    Called when a replica builds the application it serves: with no
    ``--app``, ``anyserve start`` serves exactly what installed plugins
    contribute here. Use the app's decorators as an application would::

        @hookimpl
        def anyserve_register_capabilities(app):
            @app.capability(type="embed", model="all-MiniLM-L6-v2")
            def embed(request, context):
                ...

    Import engines lazily (inside the handler or a worker's ``on_start``):
    this hook runs in every process that lists plugins.
    """


# --------------------------------------------------------------------------
# CLI commands
# --------------------------------------------------------------------------


@hookspec
def anyserve_register_commands(cli: Any) -> None:
    """Add sub-commands to the ``anyserve`` command line.

    Called once when the ``anyserve`` console script starts. ``cli`` is the
    root ``typer.Typer`` application; add a command with ``@cli.command()``
    or a group with ``cli.add_typer(group, name="objects")``. One command
    group per module keeps the CLI readable. ``anyserve plugins list`` is
    itself contributed through this hook.

    Example::

        @hookimpl
        def anyserve_register_commands(cli):
            @cli.command()
            def hello(name: str = "world"):
                print(f"hello {name}")
    """
