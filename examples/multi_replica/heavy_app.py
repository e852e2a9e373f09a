"""The heavy replica's app: one capability, ``{type: heavy, gpus: 2}``.

Capabilities are arbitrary key/value attributes: a request for
``{type: heavy}`` matches it, and so does ``{type: heavy, gpus: 2}``;
``{type: heavy, gpus: 8}`` does not. Serve it from this folder with
``anyserve start --app heavy_app:app --port 50052 --api-server http://127.0.0.1:8080 --replica-id heavy-1``.
"""

from __future__ import annotations

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse

app = AnyServe("heavy")


@app.capability(type="heavy", gpus=2)
def heavy(request: ModelInferRequest, context) -> ModelInferResponse:
    """The sum of squares of the ``numbers`` input (the "heavy" work), and which replica did it."""
    numbers = context.inputs(request).get("numbers", [])
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    result = response.outputs.add(name="result", datatype="INT64", shape=[1])
    result.contents.int64_contents.append(sum(int(n) * int(n) for n in numbers))
    served_by = response.outputs.add(name="served_by", datatype="BYTES", shape=[1])
    served_by.contents.bytes_contents.append(context.replica_id.encode())
    served_by.parameters["content_type"].string_param = "str"
    return response
