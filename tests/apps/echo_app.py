"""The application the end-to-end replica tests serve."""

from __future__ import annotations

import asyncio
import os
import time

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse
from anyserve.tensors import decode_inputs

app = AnyServe("e2e")


def write_marker(path: str, text: str) -> None:
    """Written whole, then renamed: a test polling for the file never reads it half-written."""
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def _echo(request: ModelInferRequest) -> ModelInferResponse:
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    for tensor in request.inputs:
        out = response.outputs.add(name=f"output_{tensor.name}", datatype=tensor.datatype, shape=tensor.shape)
        out.contents.CopyFrom(tensor.contents)
        for key, param in tensor.parameters.items():
            out.parameters[key].CopyFrom(param)
    response.raw_output_contents.extend(request.raw_input_contents)
    pid = response.outputs.add(name="pid", datatype="INT64", shape=[1])
    pid.contents.int64_contents.append(os.getpid())
    return response


@app.capability(type="echo")
def echo(request):
    return _echo(request)


@app.capability(type="echo", variant="async")
async def echo_async(request, context):
    await asyncio.sleep(0)
    return _echo(request)


@app.capability(type="chat", model="tiny", region="eu")
def chat_eu(request):
    response = _echo(request)
    response.parameters["served_by"].string_param = "chat-eu"
    return response


@app.capability(type="add", inputs=[("a", "INT64", [-1]), ("b", "INT64", [-1])], outputs=[("sum", "INT64", [-1])])
def add(request):
    values = decode_inputs(request)
    return {"sum": [x + y for x, y in zip(values["a"], values["b"], strict=True)]}


@app.capability(type="boom")
def boom(request):
    raise ValueError("the handler failed on purpose")


@app.capability(type="wrong-return")
def wrong_return(request):
    return 42  # neither a mapping of outputs nor a ModelInferResponse


@app.capability(type="slow")
def slow(request, context):
    """Sleeps in small steps so cancellation is observed; writes a marker file when it stops."""
    seconds = request.inputs[0].contents.fp64_contents[0] if request.inputs else 30.0
    marker = request.parameters["marker"].string_param if "marker" in request.parameters else ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if context.cancelled:
            if marker:
                write_marker(marker, "cancelled")
            return ModelInferResponse()
        time.sleep(0.01)
    return _echo(request)


@app.capability(type="chat", stream=True)
def chat_stream(request, context, stream):
    """Four tokens as token streams carry them: ``text_output`` each, ``finish_reason`` on the last."""
    tokens = ["Hello", " ", "world", "!"]
    for i, token in enumerate(tokens):
        stream.send_text(token, finish_reason="stop" if i == len(tokens) - 1 else None)


@app.capability(type="ticker", stream=True)
async def ticker(request, context, stream):
    """Streams until cancelled; writes a marker file when it stops producing."""
    marker = request.parameters["marker"].string_param if "marker" in request.parameters else ""
    n = 0
    try:
        while n < 10_000:
            stream.send_text(str(n))
            n += 1
            await asyncio.sleep(0.01)
    finally:
        if marker:
            write_marker(marker, str(n))


@app.capability(type="broken-stream", stream=True)
def broken_stream(request, stream):
    stream.send_text("partial")
    raise RuntimeError("the stream failed on purpose")
