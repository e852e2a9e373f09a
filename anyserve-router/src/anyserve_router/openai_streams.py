"""OpenAI streaming answers: a replica's LLM deltas -> chunks, as :class:`~anyserve_router.streaming.StreamEvents`.

Each upstream response is one delta of the LLM convention
(:func:`anyserve.llm.kserve.read_delta`). Chat and completions write one
``data:`` chunk per delta and ``data: [DONE]`` at the end, after a usage
chunk when ``stream_options.include_usage`` asked for one. The Responses
API writes its named events. A failure mid-stream is a last ``data:``
event holding an OpenAI error object, as vLLM and the OpenAI API send it.
"""

from __future__ import annotations

from collections.abc import Callable

from anyserve.errors import http_status
from anyserve.llm.kserve import read_delta
from anyserve.llm.types import Delta, Usage
from anyserve.protocol import messages as pb
from anyserve.protocol import openai_bodies as bodies
from anyserve.protocol.openai import error_body

MEDIA_TYPE = "text/event-stream"


class _Chunks:
    """What chat and completion chunk streams share: usage kept for the end, errors, ``[DONE]``."""

    media_type = MEDIA_TYPE
    object = ""

    def __init__(self, rid: str, created: int, model: str, include_usage: bool) -> None:
        self.rid = rid
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        #: Told the usage when the stream ends (the router's token counters).
        self.on_usage: Callable[[Usage], None] | None = None

    def _delta(self, response: pb.ModelInferResponse) -> Delta:
        delta = read_delta(response)
        if delta.usage is not None:
            self.usage = delta.usage
        return delta

    def error(self, message: str, code: str) -> bytes:
        return bodies.sse(error_body(http_status(code), message, code=code))

    def end(self) -> bytes:
        if self.usage is not None and self.on_usage is not None:
            self.on_usage(self.usage)
        if self.include_usage:
            usage = self.usage or Usage()
            return bodies.sse(bodies.usage_chunk(self.rid, self.created, self.model, self.object, usage)) + bodies.DONE
        return bodies.DONE


class ChatChunks(_Chunks):
    object = "chat.completion.chunk"

    def __init__(self, rid: str, created: int, model: str, include_usage: bool) -> None:
        super().__init__(rid, created, model, include_usage)
        self.first = True

    def response(self, response: pb.ModelInferResponse) -> bytes:
        delta = self._delta(response)
        chunk = bodies.chat_chunk(
            self.rid, self.created, self.model, delta, first=self.first, with_usage=self.include_usage
        )
        self.first = False
        return bodies.sse(chunk)


class CompletionChunks(_Chunks):
    object = "text_completion"

    def __init__(self, rid: str, created: int, model: str, include_usage: bool) -> None:
        super().__init__(rid, created, model, include_usage)
        self.offset = 0

    def response(self, response: pb.ModelInferResponse) -> bytes:
        delta = self._delta(response)
        chunk = bodies.completion(
            self.rid,
            self.created,
            self.model,
            Delta(delta.text, delta.finish_reason, None, delta.logprobs),
            offset=self.offset,
        )
        self.offset += len(delta.text)
        if self.include_usage:
            chunk["usage"] = None
        return bodies.sse(chunk)


class ResponseStream:
    """``POST /v1/responses`` with ``stream: true``: the Responses API's named events."""

    media_type = MEDIA_TYPE

    def __init__(self, rid: str, created: int, model: str) -> None:
        self.events = bodies.ResponseEvents(rid, created, model)
        self.opened = False
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.on_usage: Callable[[Usage], None] | None = None

    def _open(self) -> bytes:
        if self.opened:
            return b""
        self.opened = True
        return self.events.opening()

    def response(self, response: pb.ModelInferResponse) -> bytes:
        delta = read_delta(response)
        self.finish = delta.finish_reason or self.finish
        self.usage = delta.usage or self.usage
        out = self._open()
        return out + self.events.delta(delta.text) if delta.text else out

    def error(self, message: str, code: str) -> bytes:
        return self._open() + self.events.failed(message, code)

    def end(self) -> bytes:
        if self.usage is not None and self.on_usage is not None:
            self.on_usage(self.usage)
        return self._open() + self.events.closing(self.finish, self.usage)
