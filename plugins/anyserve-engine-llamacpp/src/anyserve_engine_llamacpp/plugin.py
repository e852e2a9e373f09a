"""The ``llamacpp`` plugin: a GGUF chat model on llama.cpp as ``{type: chat, model: <name>}``.

Written to the LLM convention (:mod:`anyserve.llm`), so the router's
OpenAI-compatible ``/v1/chat/completions`` (streamed or not, and
``/v1/responses``), KServe v2 ``/infer`` and gRPC, and Triton's generate
extension all serve it.

The capability is served by a worker class, :class:`~anyserve_engine_llamacpp.engine.LlamaCpp`:
started on the first request for it, ``starting`` while ``on_start`` loads
the model, ``hot`` once it is in memory, and stopped (the model unloaded)
after ``ANYSERVE_LLAMACPP_IDLE_TIMEOUT`` seconds without requests. What is
served and how comes from the ``ANYSERVE_LLAMACPP_*`` environment variables
(:mod:`anyserve_engine_llamacpp.model`); a malformed one makes the plugin
fail to register, and ``anyserve plugins list`` says which and why.

Importing this module is cheap (every anyserve process imports it):
``llama_cpp`` is imported only by the worker, when it loads the model.
"""

from __future__ import annotations

from typing import Any

from anyserve import AnyServe, hookimpl
from anyserve_engine_llamacpp import model
from anyserve_engine_llamacpp.engine import LlamaCpp

#: One generation at a time: a llama.cpp context holds one sequence. Requests beyond it wait their turn.
MAX_CONCURRENCY = 1


def capability(settings: model.Settings) -> dict[str, Any]:
    """What the worker offers: ``{type: chat, model: <ANYSERVE_LLAMACPP_MODEL_NAME or smollm2-135m>}``."""
    return {"type": "chat", "model": settings.model_name}


def resources(settings: model.Settings) -> dict[str, float]:
    """What the worker holds while it runs, counted against the replica's ``--resources`` budget.

    ``cpus``: the threads llama.cpp computes with; ``mem_mb``: the MiB the loaded model holds
    (``ANYSERVE_LLAMACPP_MEM_MB``, measured for the default model), left out when set to 0.
    """
    held = {"cpus": float(settings.threads)}
    if settings.mem_mb:
        held["mem_mb"] = float(settings.mem_mb)
    return held


@hookimpl
def anyserve_register_capabilities(app: AnyServe) -> None:
    settings = model.settings_from_env()
    app.worker(
        capabilities=[capability(settings)],
        idle_timeout=settings.idle_timeout,
        resources=resources(settings),
        max_concurrency=MAX_CONCURRENCY,
    )(LlamaCpp)
