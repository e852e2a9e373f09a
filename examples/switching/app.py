"""Two simulated models that cannot both fit on the replica (one "gpu").

Each is a worker class: started on the first request for its model, kept hot
while used, evicted when the other model needs the gpu. Loading costs
LOAD_SECONDS (the switching cost); generating costs TOKEN_DELAY per token.
"""

from __future__ import annotations

import os

from anyserve import AnyServe, Worker
from anyserve.simulated import SimulatedEngine

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "1.5"))
TOKEN_DELAY = float(os.environ.get("TOKEN_DELAY", "0.01"))

app = AnyServe("switching")


class SimulatedModel(Worker):
    model = ""

    def on_start(self) -> None:
        self.engine = SimulatedEngine(load_seconds=LOAD_SECONDS, token_delay=TOKEN_DELAY)
        self.engine.load(self.model)  # the switching cost, paid once per start

    def handle(self, request, context):
        prompt = request.inputs[0].contents.bytes_contents[0].decode() if request.inputs else "hello"
        return {"text_output": self.engine.complete(prompt)}

    def handle_stream(self, request, context, stream):
        prompt = request.inputs[0].contents.bytes_contents[0].decode() if request.inputs else "hello"
        tokens = list(self.engine.generate(prompt))
        for i, token in enumerate(tokens):
            stream.send_text(token, finish_reason="stop" if i == len(tokens) - 1 else None)


@app.worker(capabilities=[{"type": "chat", "model": "llama-8b"}], resources={"gpus": 1}, idle_timeout=600)
class Llama8B(SimulatedModel):
    model = "llama-8b"


@app.worker(capabilities=[{"type": "chat", "model": "mistral-7b"}], resources={"gpus": 1}, idle_timeout=600)
class Mistral7B(SimulatedModel):
    model = "mistral-7b"
