"""Apps for multi-replica tests: each replica offers a different capability."""

from __future__ import annotations

import os

from anyserve import AnyServe, ModelInferResponse


def _reply(request, text: str) -> ModelInferResponse:
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    out = response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    out.contents.bytes_contents.append(text.encode())
    out.parameters["content_type"].string_param = "str"  # decodes as str, not bytes
    pid = response.outputs.add(name="pid", datatype="INT64", shape=[1])
    pid.contents.int64_contents.append(os.getpid())
    return response


chat = AnyServe("chat")


@chat.capability(type="chat", model="small")
def small_chat(request):
    return _reply(request, "small chat")


@chat.capability(type="pipeline")
def pipeline(request, context):
    """Hands the work to another capability through the router, with ``context.call``."""
    return context.call(capability={"type": "embed"}, inputs={"text": "from the pipeline"})


embed = AnyServe("embed")


@embed.capability(type="embed")
def embedding(request):
    texts = [b.decode() for t in request.inputs for b in t.contents.bytes_contents]
    return _reply(request, "embedded: " + ",".join(texts))


heavy = AnyServe("heavy")


@heavy.capability(type="heavy", gpus=2)
def heavy_work(request):
    return _reply(request, "heavy done")
