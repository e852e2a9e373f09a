"""The router's HTTP application: ``create_app(settings, pm)`` -> :class:`RouterApp` (ASGI).

It wires the registry, the configured matcher and stream encoding (selected
by name through the catalog), the routing logic and the upstream transport,
and runs a background sweep that expires silent replicas every ``ttl/3``.
Every error is JSON ``{"error": message, "code": grpc_status_name}`` with
the HTTP status :func:`anyserve.errors.http_status` gives for the code.

Paths under ``/v1/`` are the OpenAI-compatible API
(:mod:`anyserve_router.openai_api`), which answers every error, unknown
paths included, in OpenAI's shape. The inference POSTs are the hot path:
:class:`RouterApp` hands them straight to their handlers with Starlette's
``Request``/``Response`` and the same error handlers, skipping FastAPI's
middleware, routing and dependency resolution (about a third of the
router's CPU per small request). Everything else — registry, health,
metadata, wrong methods, unknown paths, lifespan — goes to the FastAPI
app, which also declares the inference routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from anyserve import tls, tracing
from anyserve.catalog import LINK_OFF, Catalog
from anyserve.config import Settings
from anyserve.credentials import Credentials
from anyserve.encoding import StreamEncoder
from anyserve.errors import AnyServeError, code_for_http, http_status
from anyserve.plugins import PluginManager, get_plugin_manager
from anyserve.protocol import dumps, names, new_request_id
from anyserve.routing import build_pipeline
from anyserve_router import inbound
from anyserve_router.api_keys import ApiKeys
from anyserve_router.capacity import startup_grace
from anyserve_router.console import build_console_routes
from anyserve_router.engines import Engines, EngineSpec
from anyserve_router.engines_api import build_engine_routes
from anyserve_router.forwarding import Router
from anyserve_router.infer_api import InferHandlers, build_infer_routes
from anyserve_router.link_upstream import LinkUpstream
from anyserve_router.metrics import KSERVE_FRONT, metrics_endpoint
from anyserve_router.offers import RegistrationLimits
from anyserve_router.openai_api import PREFIX as OPENAI_PREFIX
from anyserve_router.openai_api import OpenAIFront
from anyserve_router.registry import ReplicaRegistry
from anyserve_router.registry_api import build_registry_routes
from anyserve_router.request_context import RequestContext, internal_error, request_context
from anyserve_router.upstream import GrpcUpstream, Upstream
from anyserve_router.version import __version__

log = logging.getLogger("anyserve.router")


@dataclass
class RouterState:
    """Everything the routes share, built once per app."""

    settings: Settings
    registry: ReplicaRegistry
    router: Router
    encoder: StreamEncoder
    upstream: Upstream
    engines: Engines
    #: The cluster and admin tokens the control plane checks.
    credentials: Credentials


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        dumps({"error": message, "code": code}), status_code=status, media_type="application/json", headers=headers
    )


async def _anyserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AnyServeError)
    replica_id = getattr(exc, "replica_id", None)
    rid = inbound.request_id(request)
    headers = {names.SERVED_BY_HEADER: replica_id} if replica_id else {}
    if rid:
        headers[names.REQUEST_ID_HEADER] = rid
    status = http_status(exc.code)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # "not now": the replica or the capacity is coming back
        status = 503
        headers["Retry-After"] = str(retry_after)
    if status >= 500:
        log.warning(
            "%s %s -> %d %s (request %s): %s", request.method, request.url.path, status, exc.code, rid, exc.message
        )
    return error_response(status, exc.message, exc.code, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), code_for_http(exc.status_code), dict(exc.headers or {}))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return error_response(400, f"invalid request: {problems}", "INVALID_ARGUMENT")


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug in the router: the log gets the traceback, the client a request id to quote, nothing more."""
    request_id = inbound.request_id(request) or new_request_id()
    log.error("internal error in %s %s (request %s)", request.method, request.url.path, request_id, exc_info=exc)
    return internal_error(request_id)


async def _error_answer(request: Request, exc: Exception) -> Response:
    """What the FastAPI app's exception handlers would answer, for requests served past it."""
    if isinstance(exc, AnyServeError):
        return await _anyserve_error(request, exc)
    if isinstance(exc, HTTPException):
        return await _http_error(request, exc)
    return await _unexpected(request, exc)


def _route_path(scope: Scope) -> str:
    """The path routing sees, ``root_path`` removed (as Starlette's ``get_route_path`` does)."""
    path: str = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path != root_path and path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


class RouterApp:
    """The ASGI entry point: inference POSTs straight to their handlers, everything else to FastAPI.

    Errors are answered as the FastAPI app answers them: AnyServeError and
    HTTPException by their handlers; anything else with a JSON 500 naming
    only a request id, its traceback logged. An error once the response has
    started (a stream failing mid-way) is re-raised as it is.
    """

    def __init__(
        self, fastapi: FastAPI, handlers: InferHandlers, openai: OpenAIFront, context: RequestContext | None = None
    ) -> None:
        self.fastapi = fastapi
        self.handlers = handlers
        self.openai = openai
        #: Request ids, body budget and last-resort errors for every HTTP request (see request_context.py).
        self.context = context or request_context(openai.state.settings.router)
        metrics = handlers.state.router.metrics
        self.metrics = metrics if metrics.enabled else None

    @property
    def state(self) -> Any:
        return self.fastapi.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.context(scope, receive, send, self._dispatch)
        else:
            await self.fastapi(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = _route_path(scope)
            if path.startswith(OPENAI_PREFIX):
                scope["app"] = self.fastapi
                await self.openai({**scope, "path": path}, receive, send)
                return
            found = self.handlers.match(path) if scope["method"] == "POST" else None
            if found is not None:
                await self._serve(found[0], found[1], scope, receive, send)
                return
        await self.fastapi(scope, receive, send)

    async def _serve(
        self,
        endpoint: Callable[..., Awaitable[Response]],
        args: tuple[str, ...],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["app"] = self.fastapi

        async def make(request: Request) -> Response:
            return await endpoint(request, *args)

        await inbound.answer(scope, receive, send, make, _error_answer, self.metrics, KSERVE_FRONT)


async def _sweep(registry: ReplicaRegistry, upstream: Upstream) -> None:
    """Expire silent replicas every ttl/3 and drop the channels of those gone."""
    interval = registry.ttl_seconds / 3
    while True:
        await asyncio.sleep(interval)
        try:
            gone = registry.expire()
            if gone:
                log.warning(
                    "expired %d replica(s) silent for more than %gs: %s",
                    len(gone),
                    registry.ttl_seconds,
                    ", ".join(gone),
                )
            await upstream.retain(registry.addresses())
        except Exception:  # the sweep must outlive any one failure
            log.exception("registry sweep failed")


def create_app(
    settings: Settings | None = None,
    pm: PluginManager | None = None,
    *,
    upstream: Upstream | None = None,
    registry: ReplicaRegistry | None = None,
    credentials: Credentials | None = None,
) -> RouterApp:
    """The router application for ``settings`` (defaults) and plugin manager ``pm`` (the process's).

    The stream encoding and matcher are resolved now, so a name no installed
    plugin provides fails here with the list of installed ones. Requests go
    to a replica over its link when it registered one the router speaks
    (``[link]``; ``off`` for gRPC only), else over gRPC. ``upstream``
    replaces that data path (tests, other transports); it is closed when
    the server shuts down. ``credentials`` default to the configured tokens,
    or those in the state directory (made there when missing).
    """
    settings = settings or Settings()
    tracing.setup(settings.tracing, tracing.ROUTER_SERVICE)
    pm = pm or get_plugin_manager()
    catalog = Catalog(pm)
    encoding = catalog.encoding(settings)
    encoder = encoding.factory(settings.encoding.options)
    matcher = catalog.matcher(settings).factory(settings.matcher.options)
    registry = registry or ReplicaRegistry(settings.router.ttl_seconds, limits=RegistrationLimits.of(settings.router))
    credentials = credentials or Credentials.load(settings)
    # Channels and links open lazily, inside the server's event loop, on first use.
    if upstream is None:
        upstream = GrpcUpstream(credentials=tls.grpc_channel_credentials(settings.tls))
        if settings.link.name != LINK_OFF:
            upstream = LinkUpstream(
                catalog, settings.link, upstream, credentials.cluster, ssl=tls.client_context(settings.tls)
            )
    registry.offer_memory_seconds = settings.router.offer_memory_seconds
    router = Router(
        registry,
        matcher,
        pm,
        upstream,
        no_match=settings.router.no_match,
        deadline_seconds=settings.router.default_deadline_seconds,
        capacity_wait_seconds=settings.router.capacity_wait_seconds,
        startup_grace_seconds=startup_grace(settings.router),
        pipeline=build_pipeline(catalog, settings),
        metrics=settings.router.metrics,
    )
    router.api_keys = ApiKeys.from_settings(settings, credentials)
    # What routing learned of a replica (prefix index, session pins) leaves with it, however it leaves.
    registry.on_gone.append(router.pipeline.forget)
    # Replicas report their load with each heartbeat, and with each response on the data path: the upstream
    # hands what a response carried to the registry.
    listen = getattr(upstream, "report_load", None)
    if listen is not None:
        listen(registry.note_load)
    router.traced = tracing.tracer is not None
    engines = Engines(registry)
    state = RouterState(settings, registry, router, encoder, upstream, engines, credentials)
    configured = [EngineSpec.of(e.url, e.id, e.capabilities, e.types) for e in settings.router.engines]

    # What the routing scorers learned (prefix index, session pins) outlives a restart in the state directory.
    state_dir = Path(settings.cluster.state_dir).expanduser() if settings.cluster.state_dir else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state_dir is not None:
            router.pipeline.load(state_dir)
        sweeper = asyncio.create_task(_sweep(registry, upstream), name="anyserve-router-sweep")
        for spec in configured:
            await engines.add(spec)
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await engines.close()
            await upstream.close()
            if state_dir is not None:
                router.pipeline.save(state_dir)

    app = FastAPI(
        title="anyserve router",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.anyserve = state
    app.add_exception_handler(AnyServeError, _anyserve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(build_registry_routes(state))
    app.include_router(build_engine_routes(engines, credentials))
    app.include_router(build_console_routes())
    handlers = InferHandlers(state)
    app.include_router(build_infer_routes(handlers))
    app.add_api_route("/metrics", metrics_endpoint(router.metrics, credentials), methods=["GET"])
    log.debug("router app: encoding %s, matcher %s", encoding.name, settings.matcher.name)
    return RouterApp(app, handlers, OpenAIFront(state))
