"""What an LLM handler receives and gives back, independent of the protocol the client spoke.

A chat, completion or embed request reaches a handler as one of these
typed values whether it came as OpenAI JSON, KServe v2 tensors over REST
or gRPC, or Triton's generate extension; the handler's deltas leave the
same way. :mod:`anyserve.llm.kserve` maps them onto KServe v2 tensors and
parameters, :mod:`anyserve.protocol.openai` onto OpenAI's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anyserve.errors import InvalidField

#: Why generation ended, as OpenAI and Triton name it.
STOP = "stop"
LENGTH = "length"


@dataclass(frozen=True)
class Message:
    """One chat message. ``content`` is its text (OpenAI's text parts joined); ``extra`` keeps the rest as sent."""

    role: str
    content: str
    #: The message's other fields (``name``, ``tool_calls``, non-text content parts...), untouched.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "message") -> Message:
        if not isinstance(data, Mapping):
            raise InvalidField(where, f"must be an object with 'role' and 'content', got {type(data).__name__}")
        role = data.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidField(f"{where}.role", "must be a non-empty string")
        content = data.get("content")
        extra = {k: v for k, v in data.items() if k not in ("role", "content")}
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            # Content parts: the text ones are the message's text; the others stay in ``extra`` for the handler.
            parts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
            if not all(isinstance(p, str) for p in parts):
                raise InvalidField(f"{where}.content", "a text part's 'text' must be a string")
            text = "".join(parts)
            if len(parts) != len(content):
                extra["content"] = content
        else:
            raise InvalidField(f"{where}.content", "must be a string or a list of content parts")
        return cls(role, text, extra)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, **self.extra}


@dataclass(frozen=True)
class Sampling:
    """How to generate: the options every engine understands, under their OpenAI names."""

    #: Most tokens to generate (OpenAI's ``max_tokens`` or ``max_completion_tokens``); None: the engine's limit.
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    #: Text that ends generation when produced (not included in the output).
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: Return the log probability of each generated token, and of ``top_logprobs`` alternatives.
    logprobs: bool = False
    top_logprobs: int | None = None
    #: Choices to generate; the convention serves one.
    n: int = 1


@dataclass
class Usage:
    """Token counts as the engine counted them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; the last one may say why generation ended and what it used.

    A handler yields plain ``str`` for text alone, or a ``Delta`` to add a
    ``finish_reason`` (``"stop"`` or ``"length"``), ``usage`` or the
    ``logprobs`` of the tokens in ``text`` (OpenAI's ``logprobs.content``
    entries: ``{"token", "logprob", "top_logprobs"}``).
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: Sequence[Mapping[str, Any]] | None = None


@dataclass
class ChatRequest:
    """A chat request: messages in, text out."""

    model: str
    messages: list[Message]
    sampling: Sampling = field(default_factory=Sampling)
    #: The end user's id the client sent (OpenAI's ``user``), for the handler's logs or limits.
    user: str | None = None
    #: Fields the convention does not define (``response_format``, ``tools``, engine-specific knobs), as sent.
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass
class CompletionRequest:
    """A text completion request: a prompt in, its continuation out."""

    model: str
    prompt: str
    sampling: Sampling = field(default_factory=Sampling)
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass
class EmbedRequest:
    """Texts to embed, one vector each."""

    model: str
    texts: list[str]
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass
class Embeddings:
    """An embed handler's answer: one row per text (a list of lists or a 2-D array) and the tokens it read."""

    vectors: Any
    prompt_tokens: int = 0


GenerateRequest = ChatRequest | CompletionRequest
