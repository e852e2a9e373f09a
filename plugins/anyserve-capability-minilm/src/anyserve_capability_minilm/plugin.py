"""The ``minilm`` plugin: a ``{type: embed, model: all-MiniLM-L6-v2}`` capability.

Written to the LLM convention (:mod:`anyserve.llm`), so the router's
OpenAI-compatible ``POST /v1/embeddings`` serves it as well as KServe v2
``/infer`` and gRPC. Request: a BYTES input ``text_input`` (the convention's
name) or ``text`` (this plugin's original one) holding one or more sentences
(any shape; str or UTF-8 bytes elements, as ``anyserve.Client`` or KServe
JSON send them). Response: an FP32 output ``embedding`` of shape [n, 384],
one L2-normalized row per sentence, so a dot product of two rows is their
cosine similarity, and an INT64 parameter ``prompt_tokens``: the tokens the
model read, as its own tokenizer counts them.

The capability is served by a worker class, :class:`MiniLM`, not an
``@app.embed`` function: a plain handler's worker reports ``hot`` as soon as
its process runs, before any model is loaded, whereas a worker class is
``hot`` only once ``on_start`` has returned, and ``on_start`` loads the
model. So the replica's status and the router's offers say ``cold``
(nothing loaded), ``starting`` (loading, a few seconds) and then ``hot``
(loaded). Its ``handle`` answers through the convention all the same
(:func:`anyserve.llm.answer_embed` with :func:`embed_texts`).

The worker class declares ``{mem_mb: 512}`` (``ANYSERVE_MINILM_MEM_MB``):
what the loaded model holds, so a replica started with ``--resources
mem_mb=N`` counts it and stops it, when idle, to make room for another
worker class (see :func:`resources`).

Importing this module is cheap (every anyserve process imports it, even
``anyserve plugins list``): the model is loaded when the worker starts, on
the first request for the capability.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from anyserve import AnyServe, Context, ModelInferRequest, ModelInferResponse, Worker, hookimpl
from anyserve.llm import Embeddings, EmbedRequest, answer_embed, read_embed
from anyserve.llm.kserve import EMBED_INPUTS
from anyserve_capability_minilm import model

#: The inputs read, in this order: the convention's ``text_input``, then this plugin's original ``text``.
INPUTS = EMBED_INPUTS
OUTPUT = "embedding"
CAPABILITY = {"type": "embed", "model": model.MODEL_NAME}

#: The variable that sets :func:`resources`' ``mem_mb``.
MEM_ENV = "ANYSERVE_MINILM_MEM_MB"
#: MiB the worker holds once the model is loaded and answering: torch, transformers and the weights grow a
#: worker's RSS by about 460 MiB on CPU, rounded up.
DEFAULT_MEM_MB = 512


def resources(env: Mapping[str, str] | None = None) -> dict[str, float]:
    """What the worker holds while it runs, counted against a replica's ``--resources`` budget.

    ``{mem_mb: ANYSERVE_MINILM_MEM_MB}`` (default :data:`DEFAULT_MEM_MB`); 0 declares nothing. A malformed
    value raises ``ValueError`` naming the variable, so the plugin fails to register and
    ``anyserve plugins list`` says why.
    """
    raw = (os.environ if env is None else env).get(MEM_ENV, "").strip()
    if not raw:
        return {"mem_mb": float(DEFAULT_MEM_MB)}
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MEM_ENV}={raw!r}: expected a whole number of MiB") from None
    if value < 0:
        raise ValueError(f"{MEM_ENV}={raw!r}: must be 0 or more")
    return {"mem_mb": float(value)} if value else {}


def sentences(request: ModelInferRequest) -> list[str]:
    """The sentences of the ``text_input`` (or ``text``) input, typed or raw contents, in row-major order."""
    return read_embed(request).texts


def embed_texts(request: EmbedRequest) -> Embeddings:
    """The convention's embed function: ``texts`` -> FP32 [n, 384] rows and the tokens the model read."""
    vectors, tokens = model.encode(request.texts)
    return Embeddings(vectors, prompt_tokens=tokens)


def embed(request: ModelInferRequest, context: Context | None = None) -> ModelInferResponse:
    """Answer an embed request: ``text_input`` or ``text`` [n sentences] -> ``embedding`` FP32 [n, 384]."""
    return answer_embed(request, embed_texts, context)


class MiniLM(Worker):
    """The worker that serves :data:`CAPABILITY`; it is ``hot`` once the model is loaded."""

    def on_start(self) -> None:
        """Load the model (imports included) before the worker announces itself ready."""
        model.get_model()

    def handle(self, request: ModelInferRequest, context: Context) -> ModelInferResponse:
        return answer_embed(request, embed_texts, context)


#: Requests one worker takes at once: encoding is one at a time per process
#: (see :mod:`anyserve_capability_minilm.model`), but parsing the next request
#: and writing the last answer overlap with it.
MAX_CONCURRENCY = 8


@hookimpl
def anyserve_register_capabilities(app: AnyServe) -> None:
    # No idle_timeout: once loaded the model stays, as it would in an always-on worker, unless a replica's
    # resource budget needs the room for another worker class (then it is stopped while idle, and loaded again
    # by the next request for it).
    app.worker(capabilities=[CAPABILITY], resources=resources(), max_concurrency=MAX_CONCURRENCY)(MiniLM)
