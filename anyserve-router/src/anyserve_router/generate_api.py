"""Triton's generate extension: ``POST /v2/models/{name}[/versions/{version}]/generate`` and ``generate_stream``.

A flat JSON body, ``{"text_input": "...", "max_tokens": 16, "parameters":
{...}}``, for the LLM convention's capabilities: ``text_input`` (or
``messages``, a list of chat messages) becomes the input tensor, every other
key and every ``parameters`` entry an option. The answer is flat too:
``{"model_name", "model_version", "text_output", "finish_reason",
"prompt_tokens", "completion_tokens"}``; ``generate_stream`` sends one
such object per delta as ``data:`` events, as Triton does (no end marker;
a failure is a last ``data: {"error": ...}``). Routing is as for the v2
infer path: the model name is the capability type, the version its
``model``, unless ``X-Capability-*`` headers say otherwise.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from anyserve.errors import InvalidRequest
from anyserve.llm.kserve import put_options, read_delta
from anyserve.protocol import dumps, loads_object, names
from anyserve.protocol import messages as pb
from anyserve.protocol.openai_bodies import sse
from anyserve_router import inbound
from anyserve_router.streaming import STREAM_HEADERS, BridgeResponse, bad_response, open_bridge

if TYPE_CHECKING:
    from anyserve.protocol import RequestMeta
    from anyserve_router.app import RouterState

GENERATE = "/generate"
GENERATE_STREAM = "/generate_stream"
_INPUTS = (names.TEXT_INPUT, names.MESSAGES_INPUT)


def generate_request(body: bytes, model: str, version: str) -> pb.ModelInferRequest:
    """The KServe request for a generate body (validated: a clear 400 for what cannot be used)."""
    data = loads_object(body)
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request_id = data.get("id")
    if request_id is not None:
        request.id = str(request_id)
    text = data.get(names.TEXT_INPUT)
    messages = data.get(names.MESSAGES_INPUT)
    if isinstance(text, str):
        tensor = request.inputs.add(name=names.TEXT_INPUT, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
    elif isinstance(messages, list) and messages:
        tensor = request.inputs.add(name=names.MESSAGES_INPUT, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(json.dumps(messages, ensure_ascii=False).encode())
    else:
        raise InvalidRequest(
            f"a generate request needs {names.TEXT_INPUT!r} (a string) or {names.MESSAGES_INPUT!r} (a list of messages)"
        )
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    options = {k: v for k, v in data.items() if k not in (*_INPUTS, "id", "parameters")}
    put_options(request.parameters, {**options, **parameters})
    return request


def _flat(response: pb.ModelInferResponse) -> dict[str, Any]:
    delta = read_delta(response)
    data: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        names.TEXT_OUTPUT: delta.text,
    }
    if response.id:
        data["id"] = response.id
    if delta.finish_reason is not None:
        data[names.FINISH_REASON_OUTPUT] = delta.finish_reason
    if delta.usage is not None:
        data[names.PROMPT_TOKENS_PARAMETER] = delta.usage.prompt_tokens
        data[names.COMPLETION_TOKENS_PARAMETER] = delta.usage.completion_tokens
    return data


class GenerateEvents:
    """``generate_stream``: one flat object per delta."""

    media_type = "text/event-stream"

    def response(self, response: pb.ModelInferResponse) -> bytes:
        return sse(_flat(response))

    def error(self, message: str, code: str) -> bytes:
        return sse({"error": message, "code": code})

    def end(self) -> bytes:
        return b""


async def generate(state: RouterState, request: Request, model: str, version: str, *, stream: bool) -> Response:
    body = await inbound.read_body(request, state.settings.router.max_body_bytes)
    meta: RequestMeta = inbound.read_meta(request, {"type": model, **({"model": version} if version else {})})
    payload = generate_request(body, model, version).SerializeToString()
    if stream:
        done = await state.router.open_stream(meta, payload, request.receive)
        bridge = open_bridge(done, GenerateEvents())
        headers = {names.SERVED_BY_HEADER: done.target.replica_id, names.REQUEST_ID_HEADER: meta.request_id}
        return BridgeResponse(bridge, {**headers, **STREAM_HEADERS})
    target, raw = await state.router.infer(meta, payload, request.receive)
    try:
        answer = _flat(pb.ModelInferResponse.FromString(raw))
    except Exception as exc:  # an answer that is not the LLM convention's
        raise bad_response(target, exc) from None
    headers = {names.SERVED_BY_HEADER: target.replica_id, names.REQUEST_ID_HEADER: meta.request_id}
    return Response(dumps(answer), media_type=names.JSON, headers=headers)
