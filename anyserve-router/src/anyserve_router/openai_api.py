"""The OpenAI-compatible API: every LLM capability behind ``/v1/...``, as the official SDK calls it.

``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` and
``/v1/responses``; ``GET /v1/models`` and ``/v1/models/{id}``. A body is
read once (:mod:`anyserve.protocol.openai`), routed as the LLM
convention's KServe v2 request (:mod:`anyserve.llm.kserve`) through the
same router as ``/infer``, and answered in OpenAI's shapes
(:mod:`anyserve.protocol.openai_bodies`).

``model`` selects the capability: ``{type: chat|completion|embed, model:
<model>}``, or the query ``[openai.aliases]`` maps the name to;
``X-Capability-*`` headers add keys, as on ``/infer``. Every error,
unknown paths included, is ``{"error": {"message", "type", "param",
"code"}}`` with the status the SDK maps to its exception classes. A unary
call whose client disconnects is cancelled, as a stream is.
``Authorization`` and ``OpenAI-*`` headers are accepted and not checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from anyserve.capability import normalize_query
from anyserve.errors import AnyServeError, Unavailable
from anyserve.llm import kserve
from anyserve.llm.types import STOP, ChatRequest, CompletionRequest, Delta, EmbedRequest, Usage
from anyserve.protocol import RequestMeta, dumps, is_final, loads_object, names, new_request_id, split_error
from anyserve.protocol import messages as pb
from anyserve.protocol import openai_bodies as bodies
from anyserve.protocol.openai import CAPABILITY_TYPE, READERS, OpenAIRequest
from anyserve.routing import RouteRequest
from anyserve.routing.request import chat_prompt
from anyserve_router import inbound
from anyserve_router.engines import passed_headers, read_bounded, relay
from anyserve_router.errors import NoMatch
from anyserve_router.forwarding import ReplicaFailed
from anyserve_router.metrics import OPENAI_FRONT
from anyserve_router.openai_errors import OpenAIError, as_openai
from anyserve_router.openai_streams import ChatChunks, CompletionChunks, ResponseStream
from anyserve_router.registry import OPENAI
from anyserve_router.selection import candidates
from anyserve_router.streaming import STREAM_HEADERS, BridgeResponse, StreamEvents, bad_response, open_bridge, parse
from anyserve_router.upstream import Metadata, Target, UpstreamError, UpstreamStream

if TYPE_CHECKING:
    from anyserve_router.app import RouterState

log = logging.getLogger("anyserve.router.openai")


PREFIX = "/v1/"
#: Entries an OpenAI request may go to: anyserve replicas and engine servers alike.
ANY = None
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embed",
    "/v1/responses": "responses",
}
ENGINE_PATHS = {kind: path for path, kind in ENDPOINTS.items()}
MODELS = "/v1/models"
#: Capability types whose ``model`` values ``GET /v1/models`` lists.
LLM_TYPES = frozenset(CAPABILITY_TYPE.values())
_ID_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-", "embed": "embd-", "responses": "resp_"}


class OpenAIFront:
    """The ASGI app for every path under ``/v1/``."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.limit = state.settings.router.max_body_bytes
        self.aliases = {name: normalize_query(query) for name, query in state.settings.openai.aliases.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def make(request: Request) -> Response:
            return await self._dispatch(request, scope["path"], scope["method"])

        async def fail(request: Request, exc: Exception) -> Response:
            request_id = inbound.request_id(request) or new_request_id()
            return as_openai(exc, request_id).response(request_id)

        # POSTs route and are counted; model listings are not requests to a capability.
        metrics = self.state.router.metrics
        counted = metrics if scope["method"] == "POST" and metrics.enabled else None
        await inbound.answer(scope, receive, send, make, fail, counted, OPENAI_FRONT)

    async def _dispatch(self, request: Request, path: str, method: str) -> Response:
        kind = ENDPOINTS.get(path)
        if kind is not None:
            if method != "POST":
                raise OpenAIError(405, f"{path} takes POST, not {method}")
            return await self._post(request, kind)
        if path == MODELS or path.startswith(MODELS + "/"):
            if method != "GET":
                raise OpenAIError(405, f"{path} takes GET, not {method}")
            inbound.authenticate(request, self.state.router.api_keys)
            models = self.models()
            if path == MODELS:
                return _json(bodies.model_list(models))
            model_id = path[len(MODELS) + 1 :]
            if model_id not in models:
                raise self._unknown(model_id, models)
            return _json(bodies.model_card(model_id))
        raise OpenAIError(404, f"no such endpoint: {method} {path}; see GET /v1/models and POST /v1/chat/completions")

    # -- models ---------------------------------------------------------------------------

    def query_for(self, kind: str, model: str, headers: Mapping[str, str]) -> dict[str, str]:
        """The capability query for ``model`` on this endpoint, ``X-Capability-*`` headers added."""
        alias = self.aliases.get(model)
        base = alias if alias is not None else {"model": model}
        return {"type": CAPABILITY_TYPE[kind], **base, **headers}

    def _offers(self) -> list[Any]:
        _, live = self.state.registry.live_entries()
        return [offer for entry in live for offer in entry.offers]

    def models(self) -> list[str]:
        """Every model a live replica offers an LLM capability for, and every alias that matches one."""
        offers = self._offers()
        found = {
            str(offer.capability["model"])
            for offer in offers
            if "model" in offer.capability and str(offer.capability.get("type")) in LLM_TYPES
        }
        matcher = self.state.router.matcher
        for alias, query in self.aliases.items():
            if any(matcher.score(offer.capability, query) is not None for offer in offers):
                found.add(alias)
        return sorted(found)

    def _unknown(self, model: str, models: list[str]) -> OpenAIError:
        shown = ", ".join(models) if models else "none (no live replica offers a chat, completion or embed model)"
        return OpenAIError(
            404,
            f"the model {model!r} does not exist or no live replica serves it; available: {shown}",
            param="model",
            code="model_not_found",
        )

    def _no_match(self, req: OpenAIRequest, query: Mapping[str, str]) -> OpenAIError:
        """404 for a model nobody offers; 503 with Retry-After for one offered but unable to serve now."""
        matcher = self.state.router.matcher
        if any(matcher.score(offer.capability, query) is not None for offer in self._offers()):
            return OpenAIError(
                503,
                f"the model {req.model!r} is offered, but no replica can serve it right now; retry shortly",
                code="unavailable",
                retry=True,
            )
        return self._unknown(req.model, self.models())

    # -- calls ---------------------------------------------------------------------------

    async def _post(self, request: Request, kind: str) -> Response:
        body = await inbound.read_body(request, self.limit)
        meta = inbound.read_meta(request)
        req = READERS[kind](body, meta.request_id)
        query = self.query_for(kind, req.model, meta.query)
        meta = meta.with_query(query)
        payload = _payload(req, query["type"]).SerializeToString()
        stream = req.stream and kind != "embed"
        route = RouteRequest(query, stream, meta.session or req.typed.user or None, _prompt(req), meta.request_id)
        call = _Call(request, req, meta, payload, body, route)
        try:
            if stream:
                return await self._stream(call)
            return await self._unary(call)
        except NoMatch:
            if not self._served(query, stream=not stream):
                raise self._no_match(req, query) from None
        # A capability served only the other way is served all the same: a unary answer as one chunk, a stream joined.
        route = replace(route, stream=not stream)
        if stream:
            target, raw = await self.state.router.infer(meta, payload, request.receive, route)
            response = _response(target, raw)
            events = self._events(req, meta.request_id)
            answer = events.response(response) + events.end()
            headers = {**_headers(target, meta.request_id), **STREAM_HEADERS}
            return Response(answer, media_type=events.media_type, headers=headers)
        target, raw = await self._joined(meta, payload, request.receive, route)
        return _json(self._answer(req, meta.request_id, target, raw), _headers(target, meta.request_id))

    async def _unary(self, call: _Call) -> Response:
        """One answer, from an anyserve replica (KServe v2) or an engine server (passed through)."""
        router = self.state.router

        async def send(target: Target, md: Metadata) -> bytes | tuple[httpx.Response, bytes]:
            if target.protocol == OPENAI:
                answer = await self._engine_send(call, target)
                return answer, await self._engine_body(answer, target)
            return await router.upstream.infer(target, call.payload, md)

        done = await router.forward(
            call.meta, send, stream=False, protocols=ANY, receive=call.request.receive, route=call.route
        )
        done.lease.release()
        request_id = call.meta.request_id
        if isinstance(done.result, tuple):
            answer, content = done.result
            headers = {**passed_headers(answer), **_headers(done.target, request_id)}
            return Response(content, status_code=answer.status_code, headers=headers)
        return _json(self._answer(call.req, request_id, done.target, done.result), _headers(done.target, request_id))

    async def _stream(self, call: _Call) -> Response:
        """A stream of chunks: KServe v2 deltas made into chunks, or an engine's stream passed through."""
        router = self.state.router
        kserve_call = router.stream_call(call.payload)

        async def send(target: Target, md: Metadata) -> tuple[UpstreamStream, bytes | None] | httpx.Response:
            if target.protocol == OPENAI:
                return await self._engine_send(call, target)
            return await kserve_call(target, md)

        done = await router.forward(
            call.meta, send, stream=True, protocols=ANY, receive=call.request.receive, route=call.route
        )
        headers = {**_headers(done.target, call.meta.request_id), **STREAM_HEADERS}
        if not isinstance(done.result, httpx.Response):
            bridge = open_bridge(done, self._events(call.req, call.meta.request_id))  # type: ignore[arg-type]
            return BridgeResponse(bridge, headers)
        answer, lease = done.result, done.lease
        if answer.status_code >= 400:  # the engine refused: its error as it is, not a stream
            try:
                content = await self._engine_body(answer, done.target)
            finally:
                lease.release()
            headers = {**passed_headers(answer), **_headers(done.target, call.meta.request_id)}
            return Response(content, status_code=answer.status_code, headers=headers)

        media_type = answer.headers.get("content-type", "text/event-stream")
        return StreamingResponse(relay(answer, lease.release), media_type=media_type, headers=headers)

    async def _engine_body(self, answer: httpx.Response, target: Target) -> bytes:
        """An engine's whole answer, within ``router.max_body_bytes``: a bigger one is a 502, not a full memory."""
        try:
            return await read_bounded(answer, self.limit)
        except ValueError as exc:
            log.warning("engine %s: %s", target.replica_id, exc)
            raise Unavailable(str(exc)) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the engine's answer broke off: {exc}", code="UNAVAILABLE") from None

    async def _engine_send(self, call: _Call, target: Target) -> httpx.Response:
        """The client's body to the engine, ``model`` rewritten only when the client named an alias."""
        body = call.body
        if target.model is not None and target.model != call.req.model:
            body = dumps({**loads_object(body), "model": target.model})
        # Only the content type: engines check headers of their own (llama.cpp's server refuses an
        # X-Request-Id that is not a UUID), and the client's credentials are for anyserve, not for them.
        headers = {"content-type": names.JSON}
        return await self.state.engines.send(target, ENGINE_PATHS[call.req.kind], body, headers)

    def _served(self, query: Mapping[str, str], *, stream: bool) -> bool:
        router = self.state.router
        found = candidates(
            self.state.registry, query, router.matcher, stream=stream, cache=router.matches, protocols=ANY
        )
        return bool(found)

    async def _joined(
        self, meta: RequestMeta, payload: bytes, receive: Receive, route: RouteRequest
    ) -> tuple[Target, bytes]:
        """A stream-only capability called without ``stream``: its deltas joined into one answer.

        Its deadline bounds the first delta; a client that leaves stops it (the bridge's rule for streams).
        """
        router = self.state.router
        own = meta.deadline is not None
        meta = router.with_deadline(meta)
        done = await router.forward(meta, router.stream_call(payload), stream=True, receive=receive, route=route)
        upstream, raw = done.result
        replica_id = done.target.replica_id
        parts: list[Delta] = []

        async def join(raw: bytes | None) -> None:
            while raw is not None:
                message = parse(raw)
                if message.error_message:
                    code, text = split_error(message.error_message)
                    raise ReplicaFailed(text, code=code, replica_id=replica_id)
                if message.infer_response.outputs:
                    parts.append(kserve.read_delta(message.infer_response))
                if is_final(message.infer_response):
                    break
                raw = await upstream.read()

        assert meta.deadline is not None
        try:
            await router.deadlines.run(join(raw), meta.deadline, receive, lambda: router.late(meta, own=own))
        except UpstreamError as exc:
            raise ReplicaFailed(exc.message, code=exc.code, replica_id=replica_id) from None
        finally:
            upstream.cancel()
            done.lease.release()
        usage = next((p.usage for p in reversed(parts) if p.usage is not None), None)
        finish = next((p.finish_reason for p in reversed(parts) if p.finish_reason), None)
        whole = Delta("".join(p.text for p in parts), finish or STOP, usage)
        return done.target, kserve.delta_response(whole, pb.ModelInferRequest()).SerializeToString()

    def _events(self, req: OpenAIRequest, request_id: str) -> StreamEvents:
        rid, created = _ID_PREFIX[req.kind] + request_id, int(time.time())
        events: ChatChunks | CompletionChunks | ResponseStream
        if req.kind == "chat":
            events = ChatChunks(rid, created, req.model, req.include_usage)
        elif req.kind == "completion":
            events = CompletionChunks(rid, created, req.model, req.include_usage)
        else:
            events = ResponseStream(rid, created, req.model)
        events.on_usage = self._count_usage
        return events

    def _count_usage(self, usage: Usage) -> None:
        self.state.router.metrics.tokens(usage.prompt_tokens, usage.completion_tokens)

    def _answer(self, req: OpenAIRequest, request_id: str, target: Target, raw: bytes) -> dict[str, Any]:
        response = _response(target, raw)
        rid, created = _ID_PREFIX[req.kind] + request_id, int(time.time())
        try:
            if req.kind == "embed":
                rows, tokens = kserve.read_embeddings(response)
                return bodies.embeddings(req.model, rows, tokens, req.encoding_format)
            delta = kserve.read_delta(response)
        except AnyServeError as exc:
            raise bad_response(target, exc) from None
        if delta.usage is not None:
            self._count_usage(delta.usage)
        if req.kind == "chat":
            return bodies.chat_completion(rid, created, req.model, delta)
        if req.kind == "completion":
            return bodies.completion(rid, created, req.model, delta)
        status = bodies.response_status(delta.finish_reason)
        return bodies.response_object(rid, created, req.model, status=status, text=delta.text, usage=delta.usage)


class _Call:
    """One OpenAI request on its way: the HTTP request, its reading, metadata, KServe payload, original body, route."""

    __slots__ = ("body", "meta", "payload", "req", "request", "route")

    def __init__(
        self, request: Request, req: OpenAIRequest, meta: RequestMeta, payload: bytes, body: bytes, route: RouteRequest
    ) -> None:
        self.request = request
        self.req = req
        self.meta = meta
        self.payload = payload
        self.body = body
        self.route = route


def _prompt(req: OpenAIRequest) -> str | None:
    """The text an engine's prefix cache would hold for ``req``: messages as they grow, or the prompt.

    Responses requests are read into chat messages (instructions, then
    input), so they share prefixes with chat requests of the same
    conversation. Embeddings have no prompt cache to aim at.
    """
    typed = req.typed
    if isinstance(typed, ChatRequest):
        return chat_prompt([{"role": m.role, "content": m.content} for m in typed.messages])
    if isinstance(typed, CompletionRequest):
        return typed.prompt
    return None


def _payload(req: OpenAIRequest, capability_type: str) -> pb.ModelInferRequest:
    typed = req.typed
    if isinstance(typed, EmbedRequest):
        return kserve.embed_request(typed, req.fields, capability_type)
    if req.kind == "completion":
        return kserve.completion_request(typed, req.fields, capability_type)  # type: ignore[arg-type]
    return kserve.chat_request(typed, req.fields, capability_type)  # type: ignore[arg-type]


def _response(target: Target, raw: bytes) -> pb.ModelInferResponse:
    try:
        return pb.ModelInferResponse.FromString(raw)
    except Exception as exc:  # DecodeError
        raise bad_response(target, exc) from None


def _headers(target: Target, request_id: str) -> dict[str, str]:
    return {names.SERVED_BY_HEADER: target.replica_id, names.REQUEST_ID_HEADER: request_id}


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), media_type=names.JSON, headers=headers)
