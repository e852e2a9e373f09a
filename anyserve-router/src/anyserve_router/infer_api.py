"""Inference routes: ``POST /infer``, ``POST /infer/stream`` and the KServe v2 REST infer paths.

A JSON body is validated and converted to a ``ModelInferRequest`` once; a
protobuf body is forwarded as the bytes it is, parsed only when its model
name is the capability (no headers) or a delegated response must be marked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter
from google.protobuf.message import DecodeError
from starlette.requests import Request
from starlette.responses import Response

from anyserve.errors import InvalidRequest
from anyserve.protocol import (
    BinaryWanted,
    RequestMeta,
    dumps,
    join,
    names,
    parse_header_length,
    parse_infer_json,
    query_from_request,
    response_to_json,
)
from anyserve.protocol import messages as pb
from anyserve_router import generate_api, inbound
from anyserve_router.forwarding import Target
from anyserve_router.generate_api import GENERATE, GENERATE_STREAM
from anyserve_router.streaming import STREAM_HEADERS, BridgeResponse, KServeEvents, bad_response, open_bridge

if TYPE_CHECKING:
    from anyserve_router.app import RouterState

NO_CAPABILITY = (
    "the request names no capability: send X-Capability-<Key> headers (e.g. X-Capability-Type: chat), "
    "or use POST /v2/models/{name}/infer, where the model name is the capability type"
)


class Inbound:
    """One inference request as read off HTTP."""

    __slots__ = ("binary", "meta", "payload", "protobuf")

    def __init__(self, payload: bytes, meta: RequestMeta, protobuf: bool, binary: BinaryWanted | None) -> None:
        self.payload = payload
        self.meta = meta
        self.protobuf = protobuf
        #: Outputs the client asked to receive as binary data (JSON bodies only).
        self.binary = binary


async def read_inbound(request: Request, limit: int, model: str = "", version: str = "") -> Inbound:
    """Body, metadata and format of an inference request.

    The query comes from ``X-Capability-*`` headers; without them, from the
    path's model name and version (``type``, ``model``) or the request's
    own ``capability.*`` parameters and model name, as a replica reads it.
    """
    body = await inbound.read_body(request, limit)
    path_query = {"type": model, **({"model": version} if version else {})} if model else None
    meta = inbound.read_meta(request, path_query)
    query = meta.query
    # The binary extension's header wins over the content type: KServe's REST client sends such bodies as
    # application/octet-stream, which otherwise means a serialised ModelInferRequest.
    header_length = parse_header_length(request.headers.get(names.HEADER_LENGTH_KEY))
    protobuf = header_length is None and inbound.is_protobuf(request)
    binary = None
    if protobuf:
        if not query:
            parsed = pb.parse_request(body)
            query = query_from_request(parsed.model_name, parsed.model_version, parsed.parameters)
        payload = body
    else:
        parsed = parse_infer_json(
            body,
            model_name=model or query.get("type", ""),
            model_version=version or query.get("model", ""),
            header_length=header_length,
        )
        if not query:
            query = query_from_request(parsed.model_name, parsed.model_version, parsed.parameters)
        binary = BinaryWanted.from_request(parsed)
        payload = parsed.SerializeToString()
    if not query:
        raise InvalidRequest(NO_CAPABILITY)
    return Inbound(payload, meta if query is meta.query else meta.with_query(query), protobuf, binary)


_SERVED_BY = names.SERVED_BY_HEADER.lower().encode()
_REQUEST_ID = names.REQUEST_ID_HEADER.lower().encode()
_DELEGATED_FROM = names.DELEGATED_FROM_HEADER.lower().encode()
_PROTOBUF = names.PROTOBUF.encode()


def _raw_headers(target: Target, meta: RequestMeta) -> list[tuple[bytes, bytes]]:
    """:func:`_headers` as the bytes a :class:`~anyserve_router.inbound.UnaryResponse` takes."""
    headers = [(_SERVED_BY, target.replica_id.encode("latin-1")), (_REQUEST_ID, meta.request_id.encode("latin-1"))]
    if meta.delegated_from is not None:
        headers.append((_DELEGATED_FROM, meta.delegated_from.encode("latin-1")))
    return headers


def _headers(target: Target, meta: RequestMeta) -> dict[str, str]:
    headers = {names.SERVED_BY_HEADER: target.replica_id, names.REQUEST_ID_HEADER: meta.request_id}
    if meta.delegated_from is not None:
        headers[names.DELEGATED_FROM_HEADER] = meta.delegated_from
    return headers


def _json_response(response: pb.ModelInferResponse, inb: Inbound, headers: dict[str, str]) -> Response:
    """KServe v2 JSON, with the outputs the client asked for as binary data after it."""
    blobs: list[bytes] | None = [] if inb.binary is not None else None
    data = response_to_json(response, inb.binary, blobs)
    if inb.meta.delegated_from is not None:
        data["parameters"][names.DELEGATED_PARAMETER] = inb.meta.delegated_from
    if not blobs:
        return Response(dumps(data), media_type=names.JSON, headers=headers)
    body, extra = join(dumps(data), blobs)
    return Response(body, media_type=names.OCTET_STREAM, headers={**headers, **extra})


class InferHandlers:
    """The inference endpoints over one app's shared state, as plain ``Request -> Response`` coroutines.

    FastAPI routes wrap them (:func:`build_infer_routes`), and the app's
    front dispatcher calls them directly, skipping FastAPI's per-request
    machinery on the hot path; errors propagate as exceptions either way.
    """

    __slots__ = ("limit", "state")

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.limit = state.settings.router.max_body_bytes

    async def infer(self, request: Request, model: str = "", version: str = "") -> Response:
        inb = await read_inbound(request, self.limit, model, version)
        meta = inb.meta
        target, raw = await self.state.router.infer(meta, inb.payload, request.receive)
        if inb.protobuf and meta.delegated_from is None:
            return inbound.UnaryResponse(raw, _PROTOBUF, _raw_headers(target, meta))
        headers = _headers(target, meta)
        try:
            response = pb.ModelInferResponse.FromString(raw)
        except DecodeError as exc:
            raise bad_response(target, exc) from None
        if inb.protobuf:
            response.parameters[names.DELEGATED_PARAMETER].string_param = meta.delegated_from or ""
            return Response(response.SerializeToString(), media_type=names.PROTOBUF, headers=headers)
        return _json_response(response, inb, headers)

    async def infer_stream(self, request: Request) -> Response:
        inb = await read_inbound(request, self.limit)
        done = await self.state.router.open_stream(inb.meta, inb.payload, request.receive)
        bridge = open_bridge(done, KServeEvents(self.state.encoder, inb.meta.delegated_from))
        return BridgeResponse(bridge, {**_headers(done.target, inb.meta), **STREAM_HEADERS})

    def match(self, path: str) -> tuple[Callable[..., Awaitable[Response]], tuple[str, ...]] | None:
        """The handler and its path arguments for a ``POST`` to ``path``, or ``None`` if it is no infer path.

        Exactly the paths :func:`build_infer_routes` declares: ``/infer``,
        ``/infer/stream``, ``/v2/models/{name}/infer`` and
        ``/v2/models/{name}/versions/{version}/infer`` (each segment non-empty),
        and the same two model paths ending in ``/generate`` or ``/generate_stream``.
        """
        if path == "/infer":
            return self.infer, ()
        if path == "/infer/stream":
            return self.infer_stream, ()
        if not path.startswith(V2_MODELS):
            return None
        for suffix, endpoint in self._v2_endpoints:
            if path.endswith(suffix):
                parts = path[len(V2_MODELS) : -len(suffix)].split("/")
                if len(parts) == 1 and parts[0]:
                    return endpoint, (parts[0],)
                if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
                    return endpoint, (parts[0], parts[2])
                return None
        return None

    async def generate(self, request: Request, model: str, version: str = "") -> Response:
        return await generate_api.generate(self.state, request, model, version, stream=False)

    async def generate_stream(self, request: Request, model: str, version: str = "") -> Response:
        return await generate_api.generate(self.state, request, model, version, stream=True)

    @property
    def _v2_endpoints(self) -> tuple[tuple[str, Callable[..., Awaitable[Response]]], ...]:
        return ((V2_INFER, self.infer), (GENERATE, self.generate), (GENERATE_STREAM, self.generate_stream))


V2_MODELS = "/v2/models/"
V2_INFER = "/infer"


def _v2_route(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    async def route(request: Request, model_name: str, model_version: str = "") -> Response:
        return await endpoint(request, model_name, model_version)

    return route


def build_infer_routes(handlers: InferHandlers) -> APIRouter:
    routes = APIRouter()

    async def plain_infer(request: Request) -> Response:
        return await handlers.infer(request)

    async def infer_stream(request: Request) -> Response:
        return await handlers.infer_stream(request)

    async def v2_infer(request: Request, model_name: str) -> Response:
        return await handlers.infer(request, model_name)

    async def v2_infer_version(request: Request, model_name: str, model_version: str) -> Response:
        return await handlers.infer(request, model_name, model_version)

    for suffix, endpoint in handlers._v2_endpoints[1:]:
        routes.add_api_route(f"/v2/models/{{model_name}}{suffix}", _v2_route(endpoint), methods=["POST"])
        routes.add_api_route(
            f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}", _v2_route(endpoint), methods=["POST"]
        )
    routes.add_api_route("/infer", plain_infer, methods=["POST"])
    routes.add_api_route("/infer/stream", infer_stream, methods=["POST"])
    routes.add_api_route("/v2/models/{model_name}/infer", v2_infer, methods=["POST"])
    routes.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", v2_infer_version, methods=["POST"])
    return routes
