"""The basic example: three unary capabilities, each a plain function.

Serve it from this folder with ``anyserve start --app app:app --port 50051``:

* ``echo`` sends every input back as ``output_<name>`` (the seed's handler,
  written against the KServe v2 protobuf messages directly);
* ``add`` adds two INT64 vectors ``a`` and ``b`` into ``sum``;
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


@app.capability(type="add")
def add_handler(request: ModelInferRequest, context) -> ModelInferResponse:
    """``sum = a + b`` element by element; ``a`` and ``b`` must have the same length."""
    inputs = context.inputs(request)  # by name, as Python values (typed or raw contents alike)
    try:
        a, b = inputs["a"], inputs["b"]
    except KeyError as missing:
        raise InvalidRequest(f"add needs inputs 'a' and 'b', got {sorted(inputs)}; missing {missing}") from None
    if len(a) != len(b):
        raise InvalidRequest(f"add needs vectors of the same length, got {len(a)} and {len(b)}")
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    out = response.outputs.add(name="sum", datatype="INT64", shape=[len(a)])
    out.contents.int64_contents.extend(x + y for x, y in zip(a, b, strict=True))
    return response


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
def classifier_handler(request: ModelInferRequest, context) -> ModelInferResponse:
    """One ``label`` (BYTES, text) and one ``score`` (FP64) per element of the ``text`` input."""
    texts = context.inputs(request).get("text")
    if texts is None:
        raise InvalidRequest("classifier needs a BYTES input named 'text'")
    texts = texts if isinstance(texts, list) else [texts]
    results = [classify(t.decode("utf-8") if isinstance(t, bytes) else str(t)) for t in texts]
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    labels = response.outputs.add(name="label", datatype="BYTES", shape=[len(results)])
    labels.contents.bytes_contents.extend(label.encode() for label, _ in results)
    labels.parameters["content_type"].string_param = "str"  # decodes as str, not bytes
    scores = response.outputs.add(name="score", datatype="FP64", shape=[len(results)])
    scores.contents.fp64_contents.extend(score for _, score in results)
    return response
