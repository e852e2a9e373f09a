"""The basic example: three unary capabilities, each a plain function.

Serve it from this folder with ``anyserve start --app app:app --port 50051``:

* ``echo`` sends every input back as ``output_<name>``, written against the
  KServe v2 protobuf messages directly;
* ``add`` adds two INT64 vectors ``a`` and ``b`` into ``sum``, returning its
  output by name (no protobuf to build) and declaring its tensors;
* ``classifier`` labels each text ``positive`` or ``negative`` by counting
  keywords (a toy), with a ``score`` in [0.5, 1): how sure it is.
"""

from __future__ import annotations

import re

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse
from anyserve.errors import InvalidRequest

app = AnyServe("basic")


@app.capability(type="echo")
def echo_handler(request: ModelInferRequest) -> ModelInferResponse:
    """Every input tensor back, renamed ``output_<name>``, with its datatype, shape and parameters."""
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    for tensor in request.inputs:
        out = response.outputs.add(name=f"output_{tensor.name}", datatype=tensor.datatype, shape=tensor.shape)
        out.contents.CopyFrom(tensor.contents)
        for key, value in tensor.parameters.items():  # e.g. content_type=str: text stays text
            out.parameters[key].CopyFrom(value)
    # A client may send raw contents instead of typed ones; they map one to one.
    response.raw_output_contents.extend(request.raw_input_contents)
    return response


@app.capability(type="add", inputs=[("a", "INT64", [-1]), ("b", "INT64", [-1])], outputs=[("sum", "INT64", [-1])])
def add_handler(request: ModelInferRequest, context) -> dict[str, list[int]]:
    """``sum = a + b`` element by element; ``a`` and ``b`` must have the same length."""
    inputs = context.inputs(request)  # by name, as Python values (typed or raw contents alike)
    try:
        a, b = inputs["a"], inputs["b"]
    except KeyError as missing:
        raise InvalidRequest(f"add needs inputs 'a' and 'b', got {sorted(inputs)}; missing {missing}") from None
    if len(a) != len(b):
        raise InvalidRequest(f"add needs vectors of the same length, got {len(a)} and {len(b)}")
    return {"sum": [x + y for x, y in zip(a, b, strict=True)]}  # outputs by name: INT64, as declared


POSITIVE = frozenset({"good", "great", "love", "excellent", "happy", "wonderful", "fast", "nice", "like", "best"})
NEGATIVE = frozenset({"bad", "terrible", "hate", "awful", "sad", "slow", "broken", "worst", "poor", "boring"})


def classify(text: str) -> tuple[str, float]:
    """(label, score): the label with more keywords (ties are positive), score its smoothed share."""
    words = re.findall(r"[a-z']+", text.lower())
    positive = sum(word in POSITIVE for word in words)
    negative = sum(word in NEGATIVE for word in words)
    label = "positive" if positive >= negative else "negative"
    score = (max(positive, negative) + 1) / (positive + negative + 2)
    return label, round(score, 3)


@app.capability(type="classifier")
def classifier_handler(request: ModelInferRequest, context) -> dict[str, list]:
    """One ``label`` (BYTES, text) and one ``score`` (FP64) per element of the ``text`` input."""
    texts = context.inputs(request).get("text")
    if texts is None:
        raise InvalidRequest("classifier needs a BYTES input named 'text'")
    texts = texts if isinstance(texts, list) else [texts]
    results = [classify(t.decode("utf-8") if isinstance(t, bytes) else str(t)) for t in texts]
    # str -> BYTES marked as text, float -> FP64: the client gets str and float back.
    return {"label": [label for label, _ in results], "score": [score for _, score in results]}
