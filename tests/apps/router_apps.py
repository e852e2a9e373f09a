"""Small apps the router's end-to-end tests route between (each replica serves one of them)."""

from __future__ import annotations

import os
import time

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse


def _tagged(request: ModelInferRequest, tag: str) -> ModelInferResponse:
    """Echoes the inputs and says which app and process answered."""
    response = ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id)
    response.parameters["app"].string_param = tag
    response.parameters["pid"].int64_param = os.getpid()
    for tensor in request.inputs:
        out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        out.contents.CopyFrom(tensor.contents)
    return response


chat_app = AnyServe("router-chat")


@chat_app.capability(type="chat", model="big", gpus=2)
def chat_big(request):
    return _tagged(request, "chat")


@chat_app.capability(type="countdown", stream=True)
def countdown(request, context, stream):
    """Five tokens 0.3 s apart; writes the marker file only once the last one is sent."""
    marker = request.parameters["marker"].string_param if "marker" in request.parameters else ""
    for n in range(5, 0, -1):
        stream.send_text(str(n))
        time.sleep(0.3)
    if marker:
        with open(marker, "w") as fh:
            fh.write("done")


embed_app = AnyServe("router-embed")


@embed_app.capability(type="embed", model_family="mini")
def embed(request):
    return _tagged(request, "embed")
