"""The demo cluster's three applications (served by `anyserve start --app anyserve_cli.demo.apps:<name>`).

* ``chat``  — a simulated chat model, ``demo-small``, on the LLM convention
  (so the router's OpenAI API serves it too), and a ``pipeline`` that hands
  an object to ``embed`` by reference;
* ``embed`` — reads an object it is given by reference;
* ``heavy`` — two simulated large models as worker classes that share one
  gpu, so serving the other model means switching.
"""

from __future__ import annotations

import hashlib
import os
import time

from anyserve import AnyServe, ModelInferRequest, Worker
from anyserve.llm import LENGTH, STOP, ChatRequest, Delta, Usage
from anyserve.simulated import SimulatedEngine

LOAD_SECONDS = float(os.environ.get("ANYSERVE_DEMO_LOAD_SECONDS", "1.0"))
TOKEN_DELAY = float(os.environ.get("ANYSERVE_DEMO_TOKEN_DELAY", "0.08"))


def prompt_of(request: ModelInferRequest) -> str:
    for tensor in request.inputs:
        if tensor.contents.bytes_contents:
            return tensor.contents.bytes_contents[0].decode(errors="replace")
    return "hello"


chat = AnyServe("demo-chat")

#: What demo-small says after repeating the prompt (tour.py and the tests look for it).
ANSWER = "Capability routing sends each request where it can be served."


def words(text: str) -> list[str]:
    """The demo's tokens: words (a real engine counts with its tokenizer)."""
    return text.split()


@chat.chat(model="demo-small")
def demo_small(request: ChatRequest):
    """A simulated chat model, written to the LLM convention (:mod:`anyserve.llm`).

    The one function answers ``{type: chat, model: demo-small}`` streamed
    and unary, over ``/infer``, ``/infer/stream``, KServe v2 gRPC and the
    router's OpenAI API: it repeats the last user message, then
    :data:`ANSWER`, one word per delta paced like a model generating, and
    stops at ``max_tokens`` (finish ``length``).
    """
    prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "") or "hello"
    tokens = words(f'(demo-small) you said "{prompt}". {ANSWER}')
    limit = request.sampling.max_tokens
    sent = tokens if limit is None else tokens[:limit]
    for i, token in enumerate(sent):
        time.sleep(TOKEN_DELAY)
        yield (" " if i else "") + token
    usage = Usage(prompt_tokens=sum(len(words(m.content)) for m in request.messages), completion_tokens=len(sent))
    yield Delta(finish_reason=LENGTH if len(sent) < len(tokens) else STOP, usage=usage)


@chat.capability(type="pipeline")
def pipeline(request, context):
    """Stores a large input once, hands only its reference to ``embed`` through the router."""
    blob = os.urandom(8 * 1024 * 1024)
    ref = context.objects.create(blob)
    result = context.call(capability={"type": "embed"}, inputs={"document": ref})
    return {
        "text_output": result["text_output"][0],
        "reference": str(ref),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


embed = AnyServe("demo-embed")


@embed.capability(type="embed")
def embed_document(request, context):
    ref = context.ref(request, "document")
    data = context.objects.get(ref)
    digest = hashlib.sha256(data).hexdigest()
    return {"text_output": f"read {len(data) / 2**20:.0f} MiB from {ref} (sha256 {digest[:12]}...)"}


heavy = AnyServe("demo-heavy")


class SimulatedLarge(Worker):
    model = ""

    def on_start(self) -> None:
        self.engine = SimulatedEngine(load_seconds=LOAD_SECONDS, token_delay=0.001)
        self.engine.load(self.model)

    def handle(self, request, context):
        return {"text_output": self.engine.complete(prompt_of(request))}


@heavy.worker(capabilities=[{"type": "heavy", "model": "llama-70b"}], resources={"gpus": 1}, idle_timeout=300)
class Llama70B(SimulatedLarge):
    model = "llama-70b"


@heavy.worker(capabilities=[{"type": "heavy", "model": "mixtral-8x22b"}], resources={"gpus": 1}, idle_timeout=300)
class Mixtral(SimulatedLarge):
    model = "mixtral-8x22b"
