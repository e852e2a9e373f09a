"""The demo cluster's three applications (served by `anyserve start --app anyserve_cli.demo.apps:<name>`).

* ``chat``  — a chat capability with a streaming variant, and a ``pipeline``
  that hands an object to ``embed`` by reference;
* ``embed`` — reads an object it is given by reference;
* ``heavy`` — two simulated large models as worker classes that share one
  gpu, so serving the other model means switching.
"""

from __future__ import annotations

import hashlib
import os
import time

from anyserve import AnyServe, ModelInferRequest, Worker
from anyserve.simulated import SimulatedEngine

LOAD_SECONDS = float(os.environ.get("ANYSERVE_DEMO_LOAD_SECONDS", "1.0"))
TOKEN_DELAY = float(os.environ.get("ANYSERVE_DEMO_TOKEN_DELAY", "0.08"))


def prompt_of(request: ModelInferRequest) -> str:
    for tensor in request.inputs:
        if tensor.contents.bytes_contents:
            return tensor.contents.bytes_contents[0].decode(errors="replace")
    return "hello"


chat = AnyServe("demo-chat")


@chat.capability(type="chat", model="demo-small")
def answer(request):
    return {"text_output": f"(demo-small) you said: {prompt_of(request)}"}


@chat.capability(type="chat", model="demo-small", stream=True)
def answer_stream(request, context, stream):
    tokens = ["Capability", " routing", " sends", " each", " request", " where", " it", " can", " be", " served", "."]
    for i, token in enumerate(tokens):
        time.sleep(TOKEN_DELAY)  # paced like a model generating
        stream.send_text(token, finish_reason="stop" if i == len(tokens) - 1 else None)


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
