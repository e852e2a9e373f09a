"""LLM capabilities written to the LLM convention, for the OpenAI, generate and KServe LLM tests.

The engine is a fake on purpose (the tests are about the protocols, not a
model): it answers ``[<model>] <the last user message's words, reversed>``
one word per delta, honouring ``max_tokens`` (finish ``length``), ``stop``
and ``seed``, and counts tokens as words. Real engines are exercised by
the llama.cpp plugin's tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from anyserve import AnyServe, Worker
from anyserve.llm import ChatRequest, CompletionRequest, Delta, Embeddings, EmbedRequest, Usage

app = AnyServe("llm")


def words(text: str) -> list[str]:
    return text.split()


def reply(model: str, prompt: str, request_seed: int | None) -> list[str]:
    tokens = [f"[{model}]", *reversed(words(prompt))]
    if request_seed is not None:  # a seeded run is a reproducible shuffle
        random.Random(request_seed).shuffle(tokens)
    return [(" " if i else "") + t for i, t in enumerate(tokens)]


def generate(model: str, prompt: str, prompt_tokens: int, sampling) -> list[Delta]:
    """The deltas of one answer, the last carrying finish reason and usage."""
    tokens = reply(model, prompt, sampling.seed)
    out: list[Delta] = []
    text = ""
    finish = "stop"
    for token in tokens:
        if sampling.max_tokens is not None and len(out) >= sampling.max_tokens:
            finish = "length"
            break
        if any(s in text + token for s in sampling.stop):
            break
        text += token
        logprobs = [{"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}]
        out.append(Delta(token, logprobs=logprobs if sampling.logprobs else None))
    usage = Usage(prompt_tokens, len(out))
    out.append(Delta("", finish, usage))
    return out


def prompt_tokens(texts: list[str]) -> int:
    return sum(len(words(t)) for t in texts)


@app.chat(model="tiny-chat")
def chat(request: ChatRequest):
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    yield from generate("tiny-chat", last_user, prompt_tokens([m.content for m in request.messages]), request.sampling)


@app.chat(model="tiny-chat-async")
async def chat_async(request: ChatRequest):
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    for delta in generate(
        "tiny-chat-async", last_user, prompt_tokens([request.messages[-1].content]), request.sampling
    ):
        await asyncio.sleep(0)
        yield delta


@app.chat(model="echo-extra")
def echo_extra(request: ChatRequest):
    """Answers with what the handler received besides the messages: proves fields pass through."""
    import json

    yield json.dumps(
        {
            "extra": request.extra,
            "user": request.user,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "max_tokens": request.sampling.max_tokens,
            "stop": list(request.sampling.stop),
            "model": request.model,
            "roles": [m.role for m in request.messages],
        },
        sort_keys=True,
    )


@app.chat(model="regional", region="eu")
def regional_eu(request: ChatRequest):
    yield "served in eu"


@app.chat(model="regional", region="us")
def regional_us(request: ChatRequest):
    yield "served in us"


@app.completion(model="tiny-complete")
def complete(request: CompletionRequest):
    yield from generate("tiny-complete", request.prompt, prompt_tokens([request.prompt]), request.sampling)


@app.embed(model="tiny-embed")
def embed(request: EmbedRequest) -> Embeddings:
    vectors = [[float(len(t)), float(len(words(t))), 1.0, -1.0] for t in request.texts]
    return Embeddings(vectors, prompt_tokens=prompt_tokens(request.texts))


@app.chat(model="slow-chat")
def slow_chat(request: ChatRequest):
    """A token every 10 ms, up to 3000; writes when and how it stopped to the file named by ``marker``."""
    marker = Path(str(request.extra.get("marker", "")))
    produced = 0
    try:
        for i in range(3000):
            time.sleep(0.01)
            produced += 1
            yield f" t{i}"
    finally:
        if marker.name:
            marker.write_text(f"{time.time()} {produced}")


@app.chat(model="broken-chat")
def broken_chat(request: ChatRequest):
    raise ValueError("the engine exploded")
    yield ""  # a generator all the same


@app.capability(type="chat", model="legacy-stream", stream=True)
def legacy_stream(request, context, stream):
    """A stream-only chat written against the tensors directly (served to non-streaming clients joined)."""
    for i, token in enumerate(["one", " two", " three"]):
        stream.send_text(token, finish_reason="stop" if i == 2 else None)


@app.capability(type="chat", model="legacy-unary")
def legacy_unary(request):
    """A unary-only chat (served to streaming clients as one chunk)."""
    return {"text_output": "all at once", "finish_reason": "stop"}


class NeverStarts(Worker):
    """A model whose loading always fails: the replica offers it, but cannot serve it right now."""

    def on_start(self) -> None:
        raise RuntimeError("weights not found")

    def handle(self, request, context):  # pragma: no cover - never reached
        raise AssertionError("unreachable")


app.worker(capabilities=[{"type": "chat", "model": "never-starts"}])(NeverStarts)
