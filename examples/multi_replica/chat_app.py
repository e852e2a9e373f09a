"""The chat replica's app: one capability, ``{type: chat}``.

Serve it from this folder with
``anyserve start --app chat_app:app --port 50051 --api-server http://127.0.0.1:8080 --replica-id chat-1``.
"""

from __future__ import annotations

from anyserve import AnyServe, ModelInferRequest

app = AnyServe("chat")


@app.capability(type="chat")
def chat(request: ModelInferRequest, context) -> dict[str, str]:
    """Answers the ``text`` input, saying which replica answered (each str becomes a BYTES text output)."""
    text = context.inputs(request).get("text", [""])[0]
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return {"text_output": f"you said {text!r}", "served_by": context.replica_id}
