"""A streaming capability: the reply arrives token by token.

Serve it from this folder with ``anyserve start --app app:app --port 50051``.
"""

from anyserve import AnyServe

app = AnyServe("streaming")

TOKENS = ["Hello", " ", "world", "!"]


@app.capability(type="chat", stream=True)
def chat(request, context, stream):
    """Send each token as its own response; the last one says why the reply ended."""
    for i, token in enumerate(TOKENS):
        stream.send_text(token, finish_reason="stop" if i == len(TOKENS) - 1 else None)
