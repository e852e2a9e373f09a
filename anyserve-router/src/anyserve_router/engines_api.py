"""``/engines``: the engine servers this router fronts (see :mod:`anyserve_router.engines`).

``POST /engines`` ``{"url", "id"?, "capabilities"?, "types"?}`` adds one and
answers what the first probe found (an engine that is down is kept and
probed again); ``GET /engines`` lists them; ``DELETE /engines/{id}``
stops fronting one. ``anyserve engine add|list|remove`` calls these.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from anyserve.protocol import loads_object
from anyserve_router import inbound
from anyserve_router.engines import Engines, EngineSpec
from anyserve_router.errors import InvalidRegistration

#: An engine's description is small; anything bigger is a mistake.
MAX_BODY = 64 * 1024


def build_engine_routes(engines: Engines) -> APIRouter:
    routes = APIRouter()

    @routes.post("/engines")
    async def add(request: Request) -> dict[str, Any]:
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
    async def listing() -> dict[str, Any]:
        return {"engines": engines.list()}

    @routes.delete("/engines/{engine_id}")
    async def remove(engine_id: str) -> dict[str, Any]:
        await engines.remove(engine_id)
        return {"removed": engine_id}

    return routes
