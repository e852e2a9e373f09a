"""The ``minilm`` plugin: a ``{type: embed, model: all-MiniLM-L6-v2}`` capability.

Request: a BYTES input ``text`` holding one or more sentences (any shape; str
or UTF-8 bytes elements, as ``anyserve.Client`` or KServe JSON send them).
Response: an FP32 output ``embedding`` of shape [n, 384], one L2-normalized
row per sentence, so a dot product of two rows is their cosine similarity.

The capability is served by a worker class, :class:`MiniLM`, not a plain
handler: a plain handler's worker reports ``hot`` as soon as its process
runs, before any model is loaded, whereas a worker class is ``hot`` only
once ``on_start`` has returned, and ``on_start`` loads the model. So the
replica's status and the router's offers say ``cold`` (nothing loaded),
``starting`` (loading, a few seconds) and then ``hot`` (loaded).

Importing this module is cheap (every anyserve process imports it, even
``anyserve plugins list``): the model is loaded when the worker starts, on
the first request for the capability.
"""

from __future__ import annotations

from anyserve import AnyServe, Context, ModelInferRequest, ModelInferResponse, Worker, hookimpl
from anyserve.errors import InvalidRequest
from anyserve.tensors import decode_tensor
from anyserve_capability_minilm import model

INPUT = "text"
OUTPUT = "embedding"
CAPABILITY = {"type": "embed", "model": model.MODEL_NAME}


def _flatten(value: object) -> list[object]:
    if isinstance(value, list):
        return [item for element in value for item in _flatten(element)]
    return [value]


def sentences(request: ModelInferRequest) -> list[str]:
    """The sentences of the ``text`` input, typed or raw contents, in row-major order."""
    for index, tensor in enumerate(request.inputs):
        if tensor.name != INPUT:
            continue
        if 0 in tensor.shape:
            return []  # an empty list has no element type (anyserve.Client sends it as FP64)
        if tensor.datatype != "BYTES":
            raise InvalidRequest(f"input {INPUT!r} must be BYTES (sentences), got {tensor.datatype}")
        raws = request.raw_input_contents
        value = decode_tensor(tensor, raws[index] if index < len(raws) else None)
        out = []
        for element in _flatten(value):
            if isinstance(element, bytes):
                try:
                    element = element.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidRequest(f"input {INPUT!r}: a sentence is not UTF-8 text") from None
            if not isinstance(element, str):
                raise InvalidRequest(f"input {INPUT!r}: expected text, got {type(element).__name__}")
            out.append(element)
        return out
    names = [t.name for t in request.inputs]
    raise InvalidRequest(f"{model.MODEL_NAME} needs a BYTES input {INPUT!r} (the sentences); got inputs {names}")


def embed(request: ModelInferRequest, context: Context | None = None) -> ModelInferResponse:
    """Answer an embed request: ``text`` [n sentences] -> ``embedding`` FP32 [n, 384]."""
    vectors = model.embed(sentences(request))
    response = ModelInferResponse(model_name=request.model_name or "embed", id=request.id)
    response.outputs.add(name=OUTPUT, datatype="FP32", shape=list(vectors.shape))
    response.raw_output_contents.append(vectors.astype("<f4", copy=False).tobytes())
    return response


class MiniLM(Worker):
    """The worker that serves :data:`CAPABILITY`; it is ``hot`` once the model is loaded."""

    def on_start(self) -> None:
        """Load the model (imports included) before the worker announces itself ready."""
        model.get_model()

    def handle(self, request: ModelInferRequest, context: Context) -> ModelInferResponse:
        return embed(request, context)


#: Requests one worker takes at once: encoding is one at a time per process
#: (see :mod:`anyserve_capability_minilm.model`), but parsing the next request
#: and writing the last answer overlap with it.
MAX_CONCURRENCY = 8


@hookimpl
def anyserve_register_capabilities(app: AnyServe) -> None:
    # No idle_timeout: once loaded the model stays, as it would in an always-on worker.
    app.worker(capabilities=[CAPABILITY], max_concurrency=MAX_CONCURRENCY)(MiniLM)
