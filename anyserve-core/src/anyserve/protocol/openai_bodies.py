"""The OpenAI API's answers, built from the LLM convention's deltas.

Shapes follow the OpenAI API reference: ``chat.completion`` and
``chat.completion.chunk``, ``text_completion`` (its chunks too), the
embeddings ``list``, ``model`` cards, and the Responses API's ``response``
object with its streaming events. Streams are Server-Sent Events:
``data: {...}`` per chunk and ``data: [DONE]`` at the end (the Responses
API names each event instead and has no ``[DONE]``).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from anyserve.llm.types import Delta, Usage
from anyserve.protocol.strict_json import dumps

DONE = b"data: [DONE]\n\n"


def sse(data: Any) -> bytes:
    """One ``data:`` event (compact JSON never holds a raw newline, so one line always does)."""
    return b"data: " + dumps(data) + b"\n\n"


def named_sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


# -- chat ------------------------------------------------------------------------------------


def _chat_logprobs(entries: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": list(entries)}


def chat_completion(rid: str, created: int, model: str, delta: Delta) -> dict[str, Any]:
    """A whole ``chat.completion`` from the unary answer (one choice)."""
    body: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": delta.text},
                "logprobs": _chat_logprobs(delta.logprobs),
                "finish_reason": delta.finish_reason,
            }
        ],
    }
    if delta.usage is not None:
        body["usage"] = usage_json(delta.usage)
    return body


def chat_chunk(rid: str, created: int, model: str, delta: Delta, *, first: bool, with_usage: bool) -> dict[str, Any]:
    """One ``chat.completion.chunk``: the first names the role; ``usage`` is null in each when usage is asked for."""
    content: dict[str, Any] = {"role": "assistant", "content": delta.text} if first else {"content": delta.text}
    choice: dict[str, Any] = {"index": 0, "delta": content, "finish_reason": delta.finish_reason}
    if delta.logprobs is not None:
        choice["logprobs"] = _chat_logprobs(delta.logprobs)
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(rid: str, created: int, model: str, obj: str, usage: Usage) -> dict[str, Any]:
    """The extra last chunk ``stream_options.include_usage`` asks for: no choices, the usage."""
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage_json(usage)}


# -- completions ------------------------------------------------------------------------------


def _completion_logprobs(entries: Sequence[Mapping[str, Any]] | None, offset: int) -> dict[str, Any] | None:
    """The legacy completions form: parallel lists of tokens, their logprobs and the top alternatives."""
    if entries is None:
        return None
    tokens, logprobs, tops, offsets = [], [], [], []
    for entry in entries:
        token = str(entry.get("token", ""))
        tokens.append(token)
        logprobs.append(entry.get("logprob"))
        tops.append({str(t.get("token", "")): t.get("logprob") for t in entry.get("top_logprobs") or ()})
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def completion(rid: str, created: int, model: str, delta: Delta, *, offset: int = 0) -> dict[str, Any]:
    """A ``text_completion``, whole or as one chunk of a stream (same object, as OpenAI sends it)."""
    body: dict[str, Any] = {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": delta.text,
                "logprobs": _completion_logprobs(delta.logprobs, offset),
                "finish_reason": delta.finish_reason,
            }
        ],
    }
    if delta.usage is not None:
        body["usage"] = usage_json(delta.usage)
    return body


# -- embeddings and models -----------------------------------------------------------------------


def embeddings(model: str, rows: Sequence[bytes], prompt_tokens: int, encoding: str) -> dict[str, Any]:
    """The embeddings ``list``; each row is little-endian float32 bytes, sent as floats or base64 of those bytes."""
    data = []
    for index, row in enumerate(rows):
        vector: Any = (
            base64.b64encode(row).decode("ascii")
            if encoding == "base64"
            else list(struct.unpack(f"<{len(row) // 4}f", row))
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "anyserve"}


def model_list(model_ids: Sequence[str]) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(m) for m in model_ids]}


# -- the Responses API -------------------------------------------------------------------------


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [] if status == "in_progress" else [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def response_object(
    rid: str,
    created: int,
    model: str,
    *,
    status: str,
    text: str = "",
    usage: Usage | None = None,
) -> dict[str, Any]:
    """A ``response``; ``incomplete`` (with its reason) when generation hit the token limit."""
    output = [_message_item("msg_" + rid, text, status)] if status != "in_progress" else []
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "model": model,
        "status": status,
        "output": output,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "usage": None,
    }
    if usage is not None:
        body["usage"] = {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    return body


def response_status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


class ResponseEvents:
    """The Responses API's streaming events for one response, numbered in order."""

    def __init__(self, rid: str, created: int, model: str) -> None:
        self.rid = rid
        self.created = created
        self.model = model
        self.item_id = "msg_" + rid
        self.sequence = 0
        self.text: list[str] = []

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return named_sse(kind, data)

    def opening(self) -> bytes:
        """``response.created`` .. ``response.content_part.added``: before the first delta."""
        started = response_object(self.rid, self.created, self.model, status="in_progress")
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return b"".join(
            [
                self._event("response.created", response=started),
                self._event("response.in_progress", response=started),
                self._event(
                    "response.output_item.added", output_index=0, item=_message_item(self.item_id, "", "in_progress")
                ),
                self._event("response.content_part.added", part=part, **where),
            ]
        )

    def delta(self, text: str) -> bytes:
        self.text.append(text)
        return self._event(
            "response.output_text.delta", item_id=self.item_id, output_index=0, content_index=0, delta=text
        )

    def closing(self, finish_reason: str | None, usage: Usage | None) -> bytes:
        """``response.output_text.done`` .. ``response.completed`` (or ``response.incomplete``)."""
        text = "".join(self.text)
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        status = response_status(finish_reason)
        done = response_object(self.rid, self.created, self.model, status=status, text=text, usage=usage)
        return b"".join(
            [
                self._event("response.output_text.done", text=text, **where),
                self._event(
                    "response.content_part.done", part={"type": "output_text", "text": text, "annotations": []}, **where
                ),
                self._event(
                    "response.output_item.done", output_index=0, item=_message_item(self.item_id, text, "completed")
                ),
                self._event("response.completed" if status == "completed" else "response.incomplete", response=done),
            ]
        )

    def failed(self, message: str, code: str) -> bytes:
        failed = response_object(self.rid, self.created, self.model, status="failed")
        failed["output"] = []
        failed["error"] = {"code": code, "message": message}
        return self._event("response.failed", response=failed)
