"""``GET /console``: the console's three static files, read once at import and served with strict headers.

The page carries no data, so it is served to anyone; everything it shows
comes from ``/registry`` and ``/metrics``, which the browser calls with the
admin token the user gave it (kept in ``sessionStorage``, never sent to
``/console``). The files are bytes in memory, answered with a fixed header
list and a strong ETag: a request costs a dict lookup, whatever the caller
sends, and the router keeps nothing per request. Any method but GET (and
any other path under ``/console/``) gets the router's JSON 405 or 404.

The Prometheus names the page reads are taken from
:mod:`anyserve.metric_names` and written into the HTML at import, so the
JavaScript never spells a metric name itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from anyserve.metric_names import NAMES, ROUTER, UNMATCHED, MetricSpec

PATH = "/console"

#: No inline script or style, no third-party origin, no framing, no form posts, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Revalidated on every load (a cheap 304 by ETag), so an upgraded router never runs a stale script.
CACHE_CONTROL = "no-cache"

#: The page's role for each router metric it reads -> the metric's name in :mod:`anyserve.metric_names`.
ROLES: dict[str, str] = {
    "requests": "anyserve_router_requests_total",
    "ttft": "anyserve_router_time_to_first_token_seconds",
    "duration": "anyserve_router_request_duration_seconds",
    "in_flight": "anyserve_router_requests_in_flight",
    "replica_in_flight": "anyserve_router_replica_in_flight",
}
_SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in ROUTER}
_missing = sorted(set(ROLES.values()) - NAMES)
if _missing:  # a renamed metric fails the router's import, not a user's browser
    raise RuntimeError(f"the console reads metrics anyserve.metric_names does not define: {', '.join(_missing)}")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    headers: dict[str, str]
    etag: str


def metrics_manifest() -> str:
    """What the page needs to know of the metrics, as JSON safe to place inside a ``<script>`` element."""
    manifest = {
        "metrics": {role: {"name": name, "kind": _SPECS[name].kind} for role, name in ROLES.items()},
        "unmatched": UNMATCHED,
    }
    return json.dumps(manifest, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _static(name: str, content_type: str, replace: dict[str, str] | None = None) -> StaticFile:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    for placeholder, value in (replace or {}).items():
        if placeholder not in text:
            raise RuntimeError(f"console/{name} lacks the placeholder {placeholder}")
        text = text.replace(placeholder, value)
    body = text.encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Content-Type": content_type,
        "Cache-Control": CACHE_CONTROL,
        "ETag": etag,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    return StaticFile(body, headers, etag)


FILES: dict[str, StaticFile] = {
    PATH: _static("console.html", "text/html; charset=utf-8", {"{{METRICS_MANIFEST}}": metrics_manifest()}),
    f"{PATH}/console.js": _static("console.js", "text/javascript; charset=utf-8"),
    f"{PATH}/console.css": _static("console.css", "text/css; charset=utf-8"),
}


def _answer(request: Request, file: StaticFile) -> Response:
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={k: v for k, v in file.headers.items() if k != "Content-Type"})
    return Response(file.body, headers=file.headers)


def build_console_routes() -> APIRouter:
    """GET routes for the page, its script and its style sheet; nothing else answers under ``/console``."""
    routes = APIRouter()

    def serve(path: str) -> None:
        file = FILES[path]

        async def endpoint(request: Request) -> Response:
            return _answer(request, file)

        routes.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)

    for path in FILES:
        serve(path)
    return routes
