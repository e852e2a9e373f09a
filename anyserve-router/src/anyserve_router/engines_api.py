"""``/engines``: the engine servers this router fronts (see :mod:`anyserve_router.engines`).

``POST /engines`` ``{"url", "id"?, "capabilities"?, "types"?}`` adds one and
answers what the first probe found (an engine that is down is kept and
probed again); ``GET /engines`` lists them; ``DELETE /engines/{id}``
stops fronting one. ``anyserve engine add|list|remove`` calls these, with
the admin token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from anyserve.credentials import Credentials
from anyserve.protocol import loads_object
from anyserve_router import inbound
from anyserve_router.control_auth import require_admin
from anyserve_router.engines import Engines, EngineSpec
from anyserve_router.errors import InvalidRegistration

#: An engine's description is small; anything bigger is a mistake.
MAX_BODY = 64 * 1024


def build_engine_routes(engines: Engines, credentials: Credentials) -> APIRouter:
    """The routes; all of them need the admin token (listing shows the engines' URLs)."""
    routes = APIRouter()

    @routes.post("/engines")
    async def add(request: Request) -> dict[str, Any]:
        require_admin(request, credentials)
        body = loads_object(await inbound.read_body(request, MAX_BODY), "engine")
        if "url" not in body:
            raise InvalidRegistration('the body must be an object with "url" (and optionally "id", "capabilities")')
        unknown = set(body) - {"url", "id", "capabilities", "types"}
        if unknown:
            raise InvalidRegistration(
                f"unknown field(s) {', '.join(sorted(unknown))}; expected url, id, capabilities, types"
            )
        spec = EngineSpec.of(body["url"], body.get("id"), body.get("capabilities"), body.get("types"))
        return (await engines.add(spec)).to_dict()

    @routes.get("/engines")
    async def listing(request: Request) -> dict[str, Any]:
        require_admin(request, credentials)
        return {"engines": engines.list()}

    @routes.delete("/engines/{engine_id}")
    async def remove(request: Request, engine_id: str) -> dict[str, Any]:
        require_admin(request, credentials)
        await engines.remove(engine_id)
        return {"removed": engine_id}

    return routes
