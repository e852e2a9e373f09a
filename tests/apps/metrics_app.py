"""A replica whose handler counts in a metric of its own, and a worker class that starts on demand."""

from __future__ import annotations

import os

from prometheus_client import Counter

from anyserve import AnyServe, ModelInferResponse, Worker

app = AnyServe("metrics")

#: A handler's own figure: written to the agent's multiprocess directory, shown by the agent's /metrics.
HANDLED = Counter("anyserve_test_handled", "Requests the counted handler ran.")


def _reply(request) -> ModelInferResponse:
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    pid = response.outputs.add(name="pid", datatype="INT64", shape=[1])
    pid.contents.int64_contents.append(os.getpid())
    return response


@app.capability(type="counted")
def counted(request):
    HANDLED.inc()
    return _reply(request)


@app.worker(capabilities=[{"type": "warm"}])
class Warm(Worker):
    def handle(self, request, context):
        return _reply(request)
