"""Membership and discovery routes: register, heartbeat (with load signals), deregister, registry, lookup, health.

Plus the KServe v2 REST health and metadata paths, so plain KServe clients
can probe the router as they would a single server.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from anyserve.capability import normalize_key, normalize_value
from anyserve.errors import InvalidRequest
from anyserve.protocol import RequestMeta, loads_object, metadata_to_json, names
from anyserve.protocol import messages as pb
from anyserve_router import inbound
from anyserve_router.control_auth import presented, replica_key, require_cluster
from anyserve_router.selection import candidates
from anyserve_router.version import __version__

if TYPE_CHECKING:
    from anyserve_router.app import RouterState

log = logging.getLogger("anyserve.router")

REGISTRATION_KEYS = ("replica_id", "endpoint", "capabilities")


def _require(data: dict[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise InvalidRequest(
            f"{what} is missing {', '.join(repr(k) for k in missing)}; expected a JSON object with {', '.join(keys)}"
        )


def lookup_query(request: Request) -> dict[str, str]:
    """Query-string parameters (``?type=chat&model=x``) over ``X-Capability-*`` headers."""
    query = dict(RequestMeta.from_http(request.scope["headers"]).query)
    for key, value in request.query_params.multi_items():
        name = normalize_key(key)
        if not name or not value.strip():
            raise InvalidRequest(f"lookup parameter {key!r}={value!r}: both the key and the value must be non-empty")
        query[name] = normalize_value(value)
    if not query:
        raise InvalidRequest("lookup needs a capability: ?type=chat&model=x, or X-Capability-<Key> headers")
    return query


def build_registry_routes(state: RouterState) -> APIRouter:
    routes = APIRouter()
    registry = state.registry
    limit = state.settings.router.max_registration_bytes
    limit_setting = "router.max_registration_bytes"

    def lease_terms(replica_id: str) -> dict[str, Any]:
        ttl = registry.ttl_seconds
        heartbeat = min(ttl / 3, state.settings.router.heartbeat_seconds)  # a restarted router hears from all in it
        return {"replica_id": replica_id, "ttl_seconds": ttl, "heartbeat_seconds": heartbeat}

    credentials = state.credentials

    @routes.post("/register")
    async def register(request: Request) -> dict[str, Any]:
        require_cluster(request, credentials)
        key = replica_key(request)
        data = loads_object(await inbound.read_body(request, limit, limit_setting), "registration")
        _require(data, REGISTRATION_KEYS, "registration")
        status = data.get("status")
        if status is not None and not isinstance(status, dict):
            raise InvalidRequest(f"registration 'status' must be a JSON object, got {type(status).__name__}")
        replica = registry.register(
            data["replica_id"], data["endpoint"], data["capabilities"], status=status, link=data.get("link"), key=key
        )
        log.info(
            "registered replica %s at %s offering %s",
            replica.id,
            replica.endpoint,
            replica.capabilities or "nothing yet",
        )
        return lease_terms(replica.id)

    @routes.post("/heartbeat")
    async def heartbeat(request: Request) -> dict[str, Any]:
        require_cluster(request, credentials)
        key = replica_key(request)
        data = loads_object(await inbound.read_body(request, limit, limit_setting), "heartbeat")
        _require(data, ("replica_id",), "heartbeat")
        registry.heartbeat(data["replica_id"], data.get("in_flight"), key=key, signals=data.get("signals"))
        return lease_terms(data["replica_id"])

    @routes.delete("/register/{replica_id}")
    async def deregister(request: Request, replica_id: str) -> dict[str, Any]:
        require_cluster(request, credentials)
        admin = credentials.is_admin(presented(request))
        registry.deregister(replica_id, request.headers.get(names.REPLICA_KEY_HEADER), admin=admin)
        log.info("deregistered replica %s", replica_id)
        return {"replica_id": replica_id, "deregistered": True}

    @routes.get("/registry")
    async def snapshot(request: Request) -> dict[str, Any]:
        # Endpoints and load of every member: where API keys guard the data plane, this needs one too.
        inbound.authenticate(request, state.router.api_keys)
        return {"replicas": registry.snapshot(), "ttl_seconds": registry.ttl_seconds}

    @routes.get("/lookup")
    async def lookup(request: Request) -> dict[str, Any]:
        query = lookup_query(request)
        inbound.authenticate(request, state.router.api_keys, query)
        target = state.router.lookup(query)
        return {"replica_id": target.replica_id, "endpoint": target.endpoint}

    @routes.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "replicas": len(registry.live_ids())}

    # -- KServe v2 REST: health and metadata ------------------------------------

    @routes.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "anyserve-router", "version": __version__, "extensions": ["anyserve_capability_routing"]}

    @routes.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @routes.get("/v2/health/ready")
    async def ready() -> Response:
        count = len(registry.live_ids())
        if count:
            return JSONResponse({"ready": True, "replicas": count})
        return JSONResponse({"ready": False, "error": "no live replica is registered"}, status_code=503)

    def model_ready(request: Request, name: str, version: str = "") -> Response:
        query = RequestMeta.from_http(request.scope["headers"]).query
        query = query or {"type": name, **({"model": version} if version else {})}
        inbound.authenticate(request, state.router.api_keys, query)
        ready = bool(candidates(registry, query, state.router.matcher))
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 404)

    async def model_metadata(request: Request, name: str, version: str = "") -> dict[str, Any]:
        """Asked of a replica serving the model: only the handler knows the tensors it declares."""
        meta = RequestMeta.from_http(request.scope["headers"]).with_request_id()
        if not meta.query:
            meta = meta.with_query({"type": name, **({"model": version} if version else {})})
        payload = pb.ModelMetadataRequest(name=name, version=version).SerializeToString()
        _, raw = await state.router.model_metadata(meta, payload)
        return metadata_to_json(pb.ModelMetadataResponse.FromString(raw))

    @routes.get("/v2/models/{model_name}")
    async def v2_model_metadata(request: Request, model_name: str) -> dict[str, Any]:
        return await model_metadata(request, model_name)

    @routes.get("/v2/models/{model_name}/versions/{model_version}")
    async def v2_model_version_metadata(request: Request, model_name: str, model_version: str) -> dict[str, Any]:
        return await model_metadata(request, model_name, model_version)

    @routes.get("/v2/models/{model_name}/ready")
    async def v2_model_ready(request: Request, model_name: str) -> Response:
        return model_ready(request, model_name)

    @routes.get("/v2/models/{model_name}/versions/{model_version}/ready")
    async def v2_model_version_ready(request: Request, model_name: str, model_version: str) -> Response:
        return model_ready(request, model_name, model_version)

    return routes
