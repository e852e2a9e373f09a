"""The application the stock-client interop tests serve (tests/test_interop_*.py).

``mixed`` (model name ``mixed``, version ``1``) declares its tensors and
answers a plain mapping, encoded with the declared datatypes; ``tokens``
streams the words of its prompt.
"""

from __future__ import annotations

from anyserve import AnyServe

app = AnyServe("interop")


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@app.capability(
    type="mixed",
    model="1",
    inputs=[("text", "BYTES", [-1]), ("x", "FP32", [-1]), ("n", "INT64", [-1])],
    outputs=[("text_out", "BYTES", [-1]), ("x_out", "FP32", [-1]), ("n_out", "INT64", [-1])],
)
def mixed(request, context):
    values = context.inputs(request)
    return {
        "text_out": [_text(t).upper() for t in values["text"]],
        "x_out": [v * 2 for v in values["x"]],
        "n_out": [v + 1 for v in values["n"]],
    }


@app.capability(
    type="tokens",
    stream=True,
    inputs=[{"name": "text", "datatype": "BYTES", "shape": [1]}],
    outputs=[
        {"name": "text_output", "datatype": "BYTES", "shape": [1]},
        {"name": "finish_reason", "datatype": "BYTES", "shape": [1]},
    ],
)
def tokens(request, context, stream):
    words = _text(context.inputs(request)["text"][0]).split()
    for i, word in enumerate(words):
        stream.send_text(word, finish_reason="stop" if i == len(words) - 1 else None)
