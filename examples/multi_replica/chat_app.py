"""The chat replica's app: one capability, ``{type: chat}``.

Serve it from this folder with
``anyserve start --app chat_app:app --port 50051 --api-server http://127.0.0.1:8080 --replica-id chat-1``.
"""

from __future__ import annotations

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse

app = AnyServe("chat")


@app.capability(type="chat")
def chat(request: ModelInferRequest, context) -> ModelInferResponse:
    """Answers the ``text`` input, saying which replica answered."""
    text = context.inputs(request).get("text", [""])[0]
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    for name, value in (("text_output", f"you said {text!r}"), ("served_by", context.replica_id)):
        out = response.outputs.add(name=name, datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(value.encode())
        out.parameters["content_type"].string_param = "str"  # decodes as str, not bytes
    return response
