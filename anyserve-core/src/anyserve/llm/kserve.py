"""The LLM convention on KServe v2: which tensors and parameters carry a chat, a completion, an embedding.

Requests
    chat: ``messages`` BYTES [1], a JSON array of OpenAI message objects
    (or ``text_input`` BYTES [1]: one user message, as Triton's generate
    extension sends it); completion: ``text_input`` BYTES [1], the prompt;
    embed: ``text_input`` BYTES [n], one text per element (``text`` is read
    too). Options travel as request parameters under their OpenAI names:
    numbers, booleans and strings as typed parameters, anything else (a
    list of ``stop`` strings, an object) as a string parameter holding its
    JSON, named with a ``.json`` suffix (``stop.json = '["\\n"]'``).
    Parameters anyserve itself uses (``capability.*``, ``anyserve.*``,
    ``binary_data_output``, ``triton_*``, ``stream``) are not options.

Responses
    ``text_output`` BYTES [1] (one delta per stream response, the whole
    text in a unary answer); ``finish_reason`` BYTES [1] on the last one;
    INT64 parameters ``prompt_tokens`` and ``completion_tokens`` with the
    usage, on the last one; ``logprobs.json`` when the handler gave
    logprobs. Embeddings: ``embedding`` FP32 [n, dimensions], raw, and
    ``prompt_tokens``.

This is Triton's generate convention (``text_input``, ``text_output``)
extended with what an OpenAI front needs, so a Triton or KServe client
that knows the former reads the answer unchanged.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from anyserve.errors import InvalidRequest
from anyserve.llm.options import split_options
from anyserve.llm.types import (
    ChatRequest,
    CompletionRequest,
    Delta,
    Embeddings,
    EmbedRequest,
    Message,
    Usage,
)
from anyserve.protocol import messages as pb
from anyserve.protocol import names, strict_json
from anyserve.protocol.datatypes import unpack_bytes
from anyserve.tensors.decode import decode_tensor
from anyserve.tensors.parameters import decode_parameter, set_parameter

#: Inputs an embed request's texts may come in (``text`` is the MiniLM plugin's original name).
EMBED_INPUTS = (names.TEXT_INPUT, "text")
_RESERVED_PREFIXES = (names.CAPABILITY_PARAMETER, "anyserve.", "triton_")
_RESERVED = frozenset({names.BINARY_DATA_OUTPUT, "stream", names.MODEL_PARAMETER})
_LOGPROBS_PARAMETER = "logprobs" + names.JSON_PARAMETER_SUFFIX


# -- options <-> parameters --------------------------------------------------------------------


def put_options(parameters: Any, fields: Mapping[str, Any]) -> None:
    """Write option fields into a ``parameters`` map (typed, or ``<name>.json``)."""
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float, str)) and not (isinstance(value, int) and abs(value) >= 2**63):
            set_parameter(parameters[name], value, name)
        else:
            parameters[name + names.JSON_PARAMETER_SUFFIX].string_param = json.dumps(value, separators=(",", ":"))


def read_options(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """The option fields of a request's parameters; the reverse of :func:`put_options`."""
    fields: dict[str, Any] = {}
    for key, param in parameters.items():
        if key in _RESERVED or key.startswith(_RESERVED_PREFIXES):
            continue
        value = decode_parameter(param)
        if key.endswith(names.JSON_PARAMETER_SUFFIX) and isinstance(value, str):
            key = key[: -len(names.JSON_PARAMETER_SUFFIX)]
            value = strict_json.loads(value.encode(), f"parameter {key}{names.JSON_PARAMETER_SUFFIX}")
        fields[key] = value
    return fields


# -- requests -------------------------------------------------------------------------------------


def _texts(request: pb.ModelInferRequest, name: str) -> list[str] | None:
    """The UTF-8 elements of input ``name`` in row-major order, or None when there is no such input."""
    for index, tensor in enumerate(request.inputs):
        if tensor.name != name:
            continue
        if 0 in tensor.shape:
            return []
        if tensor.datatype != "BYTES":
            raise InvalidRequest(f"input {name!r} must be BYTES (text), got {tensor.datatype}")
        raws = request.raw_input_contents
        value = decode_tensor(tensor, raws[index] if index < len(raws) else None)
        out: list[str] = []
        _flatten_text(value, name, out)
        return out
    return None


def _flatten_text(value: Any, name: str, out: list[str]) -> None:
    if isinstance(value, list):
        for element in value:
            _flatten_text(element, name, out)
    elif isinstance(value, bytes):
        try:
            out.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidRequest(f"input {name!r} is not UTF-8 text") from None
    elif isinstance(value, str):
        out.append(value)
    else:
        raise InvalidRequest(f"input {name!r}: expected text, got {type(value).__name__}")


def _one_text(request: pb.ModelInferRequest, name: str) -> str | None:
    texts = _texts(request, name)
    if texts is None:
        return None
    if len(texts) != 1:
        raise InvalidRequest(f"input {name!r} must hold exactly one text, got {len(texts)}")
    return texts[0]


def _model(request: pb.ModelInferRequest) -> str:
    param = request.parameters.get(names.MODEL_PARAMETER)
    return param.string_param if param is not None and param.string_param else request.model_name


def read_chat(request: pb.ModelInferRequest) -> ChatRequest:
    """A ``ChatRequest`` from ``messages`` (JSON) or ``text_input`` (one user message) and the parameters."""
    raw = _one_text(request, names.MESSAGES_INPUT)
    if raw is not None:
        data = strict_json.loads(raw.encode() if isinstance(raw, str) else raw, f"input {names.MESSAGES_INPUT!r}")
        if not isinstance(data, list) or not data:
            raise InvalidRequest(f"input {names.MESSAGES_INPUT!r} must be a non-empty JSON array of messages")
        messages = [Message.from_dict(m, f"messages[{i}]") for i, m in enumerate(data)]
    else:
        prompt = _one_text(request, names.TEXT_INPUT)
        if prompt is None:
            raise InvalidRequest(
                f"a chat request needs a BYTES input {names.MESSAGES_INPUT!r} (JSON messages) "
                f"or {names.TEXT_INPUT!r} (one user message); got {[t.name for t in request.inputs]}"
            )
        messages = [Message("user", prompt)]
    sampling, user, extra = split_options(read_options(request.parameters))
    return ChatRequest(_model(request), messages, sampling, user, extra, request.id)


def read_completion(request: pb.ModelInferRequest) -> CompletionRequest:
    prompt = _one_text(request, names.TEXT_INPUT)
    if prompt is None:
        raise InvalidRequest(
            f"a completion request needs a BYTES input {names.TEXT_INPUT!r} (the prompt); "
            f"got {[t.name for t in request.inputs]}"
        )
    sampling, user, extra = split_options(read_options(request.parameters))
    return CompletionRequest(_model(request), prompt, sampling, user, extra, request.id)


def read_embed(request: pb.ModelInferRequest) -> EmbedRequest:
    for name in EMBED_INPUTS:
        texts = _texts(request, name)
        if texts is not None:
            _, user, extra = split_options(read_options(request.parameters))
            return EmbedRequest(_model(request), texts, user, extra, request.id)
    raise InvalidRequest(
        f"an embed request needs a BYTES input {names.TEXT_INPUT!r} (the texts); got {[t.name for t in request.inputs]}"
    )


def _bytes_input(request: pb.ModelInferRequest, name: str, texts: list[str]) -> None:
    tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)


def _new_request(model_name: str, model: str, request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    if model:
        request.parameters[names.MODEL_PARAMETER].string_param = model
    return request


def chat_request(chat: ChatRequest, fields: Mapping[str, Any], model_name: str = "chat") -> pb.ModelInferRequest:
    """The KServe request for ``chat``; ``fields`` are its option fields (see :func:`sampling_fields`)."""
    request = _new_request(model_name, chat.model, chat.id)
    messages = json.dumps([m.to_dict() for m in chat.messages], separators=(",", ":"), ensure_ascii=False)
    _bytes_input(request, names.MESSAGES_INPUT, [messages])
    put_options(request.parameters, fields)
    return request


def completion_request(
    completion: CompletionRequest, fields: Mapping[str, Any], model_name: str = "completion"
) -> pb.ModelInferRequest:
    request = _new_request(model_name, completion.model, completion.id)
    _bytes_input(request, names.TEXT_INPUT, [completion.prompt])
    put_options(request.parameters, fields)
    return request


def embed_request(embed: EmbedRequest, fields: Mapping[str, Any], model_name: str = "embed") -> pb.ModelInferRequest:
    request = _new_request(model_name, embed.model, embed.id)
    _bytes_input(request, names.TEXT_INPUT, embed.texts)
    put_options(request.parameters, fields)
    return request


# -- responses ----------------------------------------------------------------------------------


def delta_response(delta: Delta, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """One delta as a response; raw contents when the request came raw (Triton's clients read only those)."""
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id)
    blobs = []
    for name, text in ((names.TEXT_OUTPUT, delta.text), (names.FINISH_REASON_OUTPUT, delta.finish_reason)):
        if text is None:
            continue
        data = text.encode()
        tensor = response.outputs.add(name=name, datatype="BYTES", shape=[1])
        if request.raw_input_contents:
            blobs.append(struct.pack("<I", len(data)) + data)
        else:
            tensor.contents.bytes_contents.append(data)
    response.raw_output_contents.extend(blobs)
    if delta.usage is not None:
        response.parameters[names.PROMPT_TOKENS_PARAMETER].int64_param = delta.usage.prompt_tokens
        response.parameters[names.COMPLETION_TOKENS_PARAMETER].int64_param = delta.usage.completion_tokens
    if delta.logprobs is not None:
        response.parameters[_LOGPROBS_PARAMETER].string_param = json.dumps(list(delta.logprobs), separators=(",", ":"))
    return response


def _output_text(response: pb.ModelInferResponse, name: str) -> str | None:
    """The UTF-8 text of BYTES output ``name``, its elements joined (read once per streamed token: kept lean)."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != name:
            continue
        if tensor.datatype != "BYTES":
            raise InvalidRequest(f"output {name!r} must be BYTES (text), got {tensor.datatype}")
        raws = response.raw_output_contents
        elements = unpack_bytes(raws[index], name) if index < len(raws) else tensor.contents.bytes_contents
        try:
            return elements[0].decode() if len(elements) == 1 else b"".join(elements).decode()
        except UnicodeDecodeError:
            raise InvalidRequest(f"output {name!r} is not UTF-8 text") from None
    return None


def read_delta(response: pb.ModelInferResponse) -> Delta:
    """The delta a response carries (the reverse of :func:`delta_response`); the router reads one per token."""
    text = _output_text(response, names.TEXT_OUTPUT) or ""
    params = response.parameters
    if len(response.outputs) == 1 and not params:  # a token in the middle of a stream
        return Delta(text)
    usage = None
    if names.COMPLETION_TOKENS_PARAMETER in params or names.PROMPT_TOKENS_PARAMETER in params:
        usage = Usage(
            prompt_tokens=_int_param(params, names.PROMPT_TOKENS_PARAMETER),
            completion_tokens=_int_param(params, names.COMPLETION_TOKENS_PARAMETER),
        )
    logprobs = None
    raw_logprobs = params.get(_LOGPROBS_PARAMETER)
    if raw_logprobs is not None and raw_logprobs.string_param:
        logprobs = json.loads(raw_logprobs.string_param)
    finish = _output_text(response, names.FINISH_REASON_OUTPUT) or None
    return Delta(text, finish, usage, logprobs)


def _int_param(params: Mapping[str, pb.InferParameter], name: str) -> int:
    param = params.get(name)
    if param is None:
        return 0
    value = decode_parameter(param)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def embeddings_response(embeddings: Embeddings, request: pb.ModelInferRequest, count: int) -> pb.ModelInferResponse:
    """``embedding`` FP32 [n, d] as raw little-endian floats, ``prompt_tokens`` as a parameter."""
    rows = embeddings.vectors
    tobytes = getattr(rows, "astype", None)
    if tobytes is not None:  # a numpy array
        if rows.ndim != 2:
            raise ValueError(f"an embed handler returns one row per text; got an array of shape {rows.shape}")
        shape = [int(rows.shape[0]), int(rows.shape[1])]
        raw = rows.astype("<f4", copy=False).tobytes()
    else:
        rows = [list(map(float, row)) for row in rows]
        width = len(rows[0]) if rows else 0
        if any(len(row) != width for row in rows):
            raise ValueError("an embed handler's rows must all have the same length")
        shape = [len(rows), width]
        raw = struct.pack(f"<{len(rows) * width}f", *(x for row in rows for x in row))
    if shape[0] != count:
        raise ValueError(f"an embed handler returned {shape[0]} rows for {count} texts")
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id)
    response.outputs.add(name=names.EMBEDDING_OUTPUT, datatype="FP32", shape=shape)
    response.raw_output_contents.append(raw)
    response.parameters[names.PROMPT_TOKENS_PARAMETER].int64_param = embeddings.prompt_tokens
    return response


def read_embeddings(response: pb.ModelInferResponse) -> tuple[list[bytes], int]:
    """Each row of ``embedding`` as little-endian FP32 bytes, and the prompt tokens."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != names.EMBEDDING_OUTPUT:
            continue
        if tensor.datatype != "FP32" or len(tensor.shape) != 2:
            raise InvalidRequest(f"output {names.EMBEDDING_OUTPUT!r} must be FP32 [n, d], got {tensor.datatype}")
        rows, width = int(tensor.shape[0]), int(tensor.shape[1])
        if index < len(response.raw_output_contents):
            raw = response.raw_output_contents[index]
        else:
            raw = struct.pack(f"<{len(tensor.contents.fp32_contents)}f", *tensor.contents.fp32_contents)
        if len(raw) != rows * width * 4:
            raise InvalidRequest(f"output {names.EMBEDDING_OUTPUT!r}: {len(raw)} bytes do not fill [{rows}, {width}]")
        step = width * 4
        tokens = _int_param(response.parameters, names.PROMPT_TOKENS_PARAMETER)
        return [raw[i * step : (i + 1) * step] for i in range(rows)], tokens
    raise InvalidRequest(f"the answer has no {names.EMBEDDING_OUTPUT!r} output")
