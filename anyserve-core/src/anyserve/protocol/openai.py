"""The OpenAI API's request bodies, read once into the LLM convention's typed requests.

A sibling of :mod:`~anyserve.protocol.v2_json`: the router's OpenAI front
reads a body here, routes the typed request as KServe v2 tensors
(:mod:`anyserve.llm.kserve`) and writes the answer with
:mod:`~anyserve.protocol.openai_bodies`. Every check names the field at
fault (OpenAI errors carry it as ``param``); fields the convention does not
define are passed to the handler, not refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from anyserve.llm.options import OptionError, split_options
from anyserve.llm.types import ChatRequest, CompletionRequest, EmbedRequest, Message
from anyserve.protocol.v2_json import loads_object

Kind = Literal["chat", "completion", "embed", "responses"]

#: The capability type each kind of request asks for by default (``responses`` is chat).
CAPABILITY_TYPE: dict[str, str] = {"chat": "chat", "completion": "completion", "embed": "embed", "responses": "chat"}
#: Fields the front itself reads; every other field goes to the handler.
_FRONT_FIELDS = frozenset({"model", "messages", "prompt", "input", "stream", "stream_options", "encoding_format"})
ENCODING_FORMATS = ("float", "base64")


@dataclass
class OpenAIRequest:
    """One OpenAI request, read: what to route, what the handler gets, how to answer."""

    kind: Kind
    #: The model the client named: an alias, or the capability's ``model``.
    model: str
    typed: ChatRequest | CompletionRequest | EmbedRequest
    #: The option fields as the handler reads them back (KServe parameters).
    fields: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    #: Embeddings only: ``float`` lists or ``base64`` of little-endian float32.
    encoding_format: str = "float"


def _param_error(param: str, message: str) -> OptionError:
    return OptionError(param, message)


def _model(data: Mapping[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _param_error("model", "is required: the name of the model to use (GET /v1/models lists them)")
    return model


def _stream(data: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _param_error("stream", f"must be true or false, got {stream!r}")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping):
            raise _param_error("stream_options", "must be an object")
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise _param_error("stream_options.include_usage", f"must be true or false, got {include!r}")
        include_usage = include
    return bool(stream), include_usage


def _options(data: Mapping[str, Any]) -> tuple[Any, str | None, dict[str, Any], dict[str, Any]]:
    fields = {k: v for k, v in data.items() if k not in _FRONT_FIELDS}
    sampling, user, extra = split_options(fields)
    if sampling.n != 1:
        raise _param_error("n", f"n={sampling.n} is not supported: the handler generates one choice per request")
    return sampling, user, extra, {k: v for k, v in fields.items() if v is not None}


def read_chat(body: bytes, request_id: str) -> OpenAIRequest:
    """``POST /v1/chat/completions``."""
    data = loads_object(body)
    model = _model(data)
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _param_error("messages", "is required: a non-empty list of {role, content} objects")
    messages = [Message.from_dict(m, f"messages[{i}]") for i, m in enumerate(raw)]
    stream, include_usage = _stream(data)
    sampling, user, extra, fields = _options(data)
    chat = ChatRequest(model, messages, sampling, user, extra, request_id)
    return OpenAIRequest("chat", model, chat, fields, stream, include_usage)


def _one_prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        raise _param_error("prompt", f"one prompt per request is served; got a batch of {len(prompt)}")
    raise _param_error("prompt", "is required: a string (token-id prompts are not served)")


def read_completion(body: bytes, request_id: str) -> OpenAIRequest:
    """``POST /v1/completions``. Its ``logprobs`` is a count: the alternatives to return per token."""
    data = loads_object(body)
    model = _model(data)
    prompt = _one_prompt(data.get("prompt"))
    stream, include_usage = _stream(data)
    logprobs = data.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        if not isinstance(logprobs, int) or not 0 <= logprobs <= 5:
            raise _param_error("logprobs", f"must be an integer between 0 and 5, got {logprobs!r}")
        data = {**data, "logprobs": True, "top_logprobs": logprobs}
    sampling, user, extra, fields = _options(data)
    completion = CompletionRequest(model, prompt, sampling, user, extra, request_id)
    return OpenAIRequest("completion", model, completion, fields, stream, include_usage)


def read_embeddings(body: bytes, request_id: str) -> OpenAIRequest:
    """``POST /v1/embeddings``: ``input`` a string or a list of strings."""
    data = loads_object(body)
    model = _model(data)
    raw = data.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = list(raw)
    else:
        raise _param_error("input", "is required: a string or a non-empty list of strings (token ids are not served)")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ENCODING_FORMATS:
        raise _param_error("encoding_format", f"must be one of {', '.join(ENCODING_FORMATS)}, got {encoding!r}")
    fields = {k: v for k, v in data.items() if k not in _FRONT_FIELDS and v is not None}
    _, user, extra = split_options(fields)
    embed = EmbedRequest(model, texts, user, extra, request_id)
    return OpenAIRequest("embed", model, embed, fields, encoding_format=encoding)


def _response_messages(data: Mapping[str, Any]) -> list[Message]:
    """The Responses API's ``instructions`` and ``input`` as chat messages (text only)."""
    messages: list[Message] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _param_error("instructions", "must be a string")
        messages.append(Message("system", instructions))
    raw = data.get("input")
    if isinstance(raw, str):
        messages.append(Message("user", raw))
    elif isinstance(raw, list) and raw:
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or "role" not in item:
                raise _param_error(f"input[{i}]", "must be a message: {role, content}")
            content = item.get("content")
            if isinstance(content, list):  # input_text / output_text parts
                texts = [p.get("text") for p in content if isinstance(p, Mapping)]
                if not all(isinstance(t, str) for t in texts):
                    raise _param_error(f"input[{i}].content", "only text parts are served")
                content = "".join(texts)
            messages.append(Message.from_dict({"role": item["role"], "content": content}, f"input[{i}]"))
    else:
        raise _param_error("input", "is required: a string or a list of messages")
    return messages


def read_responses(body: bytes, request_id: str) -> OpenAIRequest:
    """``POST /v1/responses``, text in and text out, served by a chat capability."""
    data = loads_object(body)
    model = _model(data)
    messages = _response_messages(data)
    stream, _ = _stream(data)
    rest = {k: v for k, v in data.items() if k not in ("instructions", "max_output_tokens")}
    max_output = data.get("max_output_tokens")
    if max_output is not None:
        # Checked here so that the error names the field the client sent, not the one it becomes.
        if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1:
            raise _param_error("max_output_tokens", f"must be an integer, at least 1, got {max_output!r}")
        rest["max_tokens"] = max_output
    sampling, user, extra, fields = _options(rest)
    chat = ChatRequest(model, messages, sampling, user, extra, request_id)
    return OpenAIRequest("responses", model, chat, fields, stream)


READERS = {"chat": read_chat, "completion": read_completion, "embed": read_embeddings, "responses": read_responses}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API answers errors."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
