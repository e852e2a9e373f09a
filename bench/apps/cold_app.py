"""The app the cold-start benchmark serves: one worker class and one always-on handler.

The worker class loads nothing, so what is measured is anyserve's own cost of
starting a worker process (interpreter, imports, plugins, handshake).
"""

from __future__ import annotations

from anyserve import AnyServe, ModelInferResponse, Worker

app = AnyServe("cold-start")


@app.worker(capabilities=[{"type": "on-demand"}], idle_timeout=0.5)
class OnDemand(Worker):
    def handle(self, request, context):
        return ModelInferResponse(model_name=request.model_name, id=request.id)


@app.capability(type="always-on")
def always_on(request):
    return ModelInferResponse(model_name=request.model_name, id=request.id)
