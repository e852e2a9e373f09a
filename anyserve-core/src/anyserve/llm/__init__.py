"""The LLM handler convention: one typed function serves OpenAI, KServe v2 and Triton's generate.

::

    app = AnyServe()

    @app.chat(model="smollm2-135m")
    def chat(request: ChatRequest):          # or async def, or (request, context)
        for token in engine.generate(request.messages, request.sampling):
            yield token                      # str, or Delta(text, finish_reason, usage, logprobs)

    @app.embed(model="all-MiniLM-L6-v2")
    def embed(request: EmbedRequest):
        return Embeddings(vectors, prompt_tokens=n)

``@app.chat`` offers ``{type: chat, model: ...}`` both as a stream and as a
unary call; ``@app.completion`` offers ``{type: completion, ...}`` the same
way; ``@app.embed`` offers ``{type: embed, ...}``. How requests and deltas
travel as KServe v2 tensors: :mod:`anyserve.llm.kserve`.
"""

from anyserve.llm.handlers import answer_embed, embed_handler, generate_handlers
from anyserve.llm.kserve import read_chat, read_completion, read_embed
from anyserve.llm.options import OptionError, sampling_fields, split_options
from anyserve.llm.types import (
    LENGTH,
    STOP,
    ChatRequest,
    CompletionRequest,
    Delta,
    Embeddings,
    EmbedRequest,
    Message,
    Sampling,
    Usage,
)

__all__ = [
    "LENGTH",
    "STOP",
    "ChatRequest",
    "CompletionRequest",
    "Delta",
    "EmbedRequest",
    "Embeddings",
    "Message",
    "OptionError",
    "Sampling",
    "Usage",
    "answer_embed",
    "embed_handler",
    "generate_handlers",
    "read_chat",
    "read_completion",
    "read_embed",
    "sampling_fields",
    "split_options",
]
