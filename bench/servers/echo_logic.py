"""The work every system under test does, shared so the floors and anyserve run the same code.

Imported by the anyserve app (``bench_app``) and by both bare floors, so a
ratio measures the serving stack, not a difference in handler work.
"""

from __future__ import annotations

import json

from anyserve.protocol.messages import ModelInferRequest, ModelInferResponse, ModelStreamInferResponse

#: Tokens one W3 stream sends.
TOKENS = 256
FINAL_PARAMETER = "triton_final_response"


def echo(request: ModelInferRequest) -> ModelInferResponse:
    """Echo every input tensor (metadata and contents) and the raw contents."""
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    for tensor in request.inputs:
        out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.HasField("contents"):
            out.contents.CopyFrom(tensor.contents)
    response.raw_output_contents.extend(request.raw_input_contents)
    return response


def token_count(request: ModelInferRequest) -> int:
    """How many tokens a stream request asks for (request parameter ``tokens``, default 256)."""
    param = request.parameters.get("tokens")
    return param.int64_param if param is not None and param.int64_param > 0 else TOKENS


def token_text(i: int) -> str:
    return f"t{i}"


def token_response(request: ModelInferRequest, i: int) -> ModelStreamInferResponse:
    """One token in the seed's convention: what ``anyserve.Stream.send_text`` builds."""
    infer = ModelInferResponse(model_name=request.model_name, id=request.id)
    out = infer.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    out.contents.bytes_contents.append(token_text(i).encode())
    return ModelStreamInferResponse(infer_response=infer)


def final_marker(request: ModelInferRequest) -> ModelStreamInferResponse:
    """The empty response that closes a request's run (Triton's convention, as the agent sends it)."""
    response = ModelInferResponse(id=request.id)
    response.parameters[FINAL_PARAMETER].bool_param = True
    return ModelStreamInferResponse(infer_response=response)


def token_event_json(model_name: str, request_id: str, i: int) -> bytes:
    """One token as the KServe v2 JSON the router writes in an SSE ``data:`` line."""
    data = {
        "model_name": model_name,
        "id": request_id,
        "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1], "data": [token_text(i)]}],
    }
    return json.dumps(data, separators=(",", ":")).encode()
