"""The two nodes of the step-1 scenario, each an app served by its own replica.

* ``node_a`` offers ``{type: small}``: a fast toy model (it reverses the words).
* ``node_b`` offers ``{type: large}``: a simulated engine
  (:class:`anyserve.simulated.SimulatedEngine`) that keeps one *current model*
  and pays ``LOAD_SECONDS`` (the switching cost) only when a request asks for
  another model (request parameter ``model``). A result bigger than
  ``INLINE_LIMIT`` bytes goes to the shared object store and the answer carries
  only its reference: the input ``make_huge_data`` asks for such a result.

A replica started with ``--api-server`` delegates what it does not offer to
the router, so ``large`` sent to node A is served by node B.
"""

from __future__ import annotations

import hashlib
import os

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse
from anyserve.simulated import SimulatedEngine

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "1.0"))
TOKEN_DELAY = float(os.environ.get("TOKEN_DELAY", "0.01"))
DEFAULT_MODEL = "llama-70b"
INLINE_LIMIT = 64 * 1024  # bigger results travel by reference
HUGE_DATA_BYTES = 4 * 1024 * 1024


def _prompt(request: ModelInferRequest, context) -> str:
    value = context.inputs(request).get("text", [""])
    value = value[0] if isinstance(value, list) and value else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _add_text(response: ModelInferResponse, name: str, text: str) -> None:
    out = response.outputs.add(name=name, datatype="BYTES", shape=[1])
    out.contents.bytes_contents.append(text.encode("utf-8"))
    out.parameters["content_type"].string_param = "str"  # decodes as str, not bytes


# -- node A: {type: small} ------------------------------------------------------

node_a = AnyServe("node-a")


@node_a.capability(type="small")
def small(request: ModelInferRequest, context) -> ModelInferResponse:
    """Fast: no model to load; the answer is the prompt's words reversed."""
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    _add_text(response, "text_output", " ".join(reversed(_prompt(request, context).split())))
    _add_text(response, "served_by", context.replica_id)
    return response


# -- node B: {type: large} ------------------------------------------------------

node_b = AnyServe("node-b")

# One engine per worker process: its `model` is the worker's current model.
ENGINE = SimulatedEngine(load_seconds=LOAD_SECONDS, token_delay=TOKEN_DELAY)


def make_huge_data(model: str, size: int = HUGE_DATA_BYTES) -> bytes:
    """A deterministic result far too big to send inline."""
    line = f"[{model}] a line of a very large simulated result\n".encode()
    return (line * (size // len(line) + 1))[:size]


@node_b.capability(type="large")
def large(request: ModelInferRequest, context) -> ModelInferResponse:
    """Switch model only when asked for another one, generate, and return big results by reference."""
    model = str(context.parameters(request).get("model", DEFAULT_MODEL))
    switch_seconds = ENGINE.load(model)  # 0.0 when `model` is already the current model
    prompt = _prompt(request, context)
    result = make_huge_data(model) if prompt == "make_huge_data" else ENGINE.complete(prompt).encode()

    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    if len(result) > INLINE_LIMIT:
        ref = context.objects.create(result, content_type="text/plain")
        out = response.outputs.add(name="result_ref", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(str(ref).encode())  # "fs://<key>": a reference, not the data
        out.parameters["anyserve.objref"].bool_param = True  # clients decode it as an ObjRef
        size = response.outputs.add(name="size", datatype="INT64", shape=[1])
        size.contents.int64_contents.append(len(result))
        _add_text(response, "sha256", hashlib.sha256(result).hexdigest())
    else:
        _add_text(response, "text_output", result.decode("utf-8"))
    _add_text(response, "model", model)
    _add_text(response, "served_by", context.replica_id)
    cost = response.outputs.add(name="switch_seconds", datatype="FP64", shape=[1])
    cost.contents.fp64_contents.append(round(switch_seconds, 3))
    return response
