"""The anyserve application every anyserve system under test serves.

Handlers are ``async def`` (they run on the worker's event loop, like the
floors' handlers); ``echo`` with ``variant=sync`` is the same echo as a plain
function (run in the worker's thread pool) for the supplementary row.
``bench-tokens`` is a no-compute chat engine in the LLM convention
(``@app.chat``): the CHAT rows drive it through the router's OpenAI API and
through ``/infer/stream``.
"""

from __future__ import annotations

from echo_logic import echo as _echo
from echo_logic import token_count, token_text

from anyserve import AnyServe, ModelInferResponse
from anyserve.llm import LENGTH, ChatRequest, Delta, Usage

#: Tokens a ``bench-tokens`` chat generates when the request sets no ``max_tokens``.
CHAT_TOKENS = 256

app = AnyServe("bench")


@app.capability(type="echo")
async def echo(request):
    return _echo(request)


@app.capability(type="echo", variant="sync")
def echo_sync(request):
    return _echo(request)


@app.capability(type="tokens", stream=True)
async def tokens(request, context, stream):
    """``tokens`` small text tokens as fast as the reader takes them.

    ``await stream.drain()`` paces the handler by its reader, as the floors'
    async generators are paced by the server pulling from them.
    """
    for i in range(token_count(request)):
        stream.send_text(token_text(i))
        await stream.drain()


@app.chat(model="bench-tokens")
async def bench_tokens(request: ChatRequest):
    """A no-compute token engine: ``max_tokens`` (default 256) small text tokens, as fast as they are read.

    The convention's stream adapter sends each delta and awaits
    ``stream.drain()``, the pacing of the ``tokens`` handler above; as an
    engine does, the last token comes with the finish reason (``length``:
    ``max_tokens`` reached) and the usage (prompt tokens: the prompt's words).
    """
    count = request.sampling.max_tokens or CHAT_TOKENS
    for i in range(count - 1):
        yield token_text(i)
    prompt = sum(len(m.content.split()) for m in request.messages)
    yield Delta(token_text(count - 1), LENGTH, Usage(prompt, count))


@app.capability(type="objstat")
async def objstat(request, context):
    """By reference: resolve the ObjRef and stat it in the shared store; answer its size."""
    ref = context.ref(request, "data")
    size = context.objects.stat(ref).size or 0
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    out = response.outputs.add(name="size", datatype="INT64", shape=[1])
    out.contents.int64_contents.append(size)
    return response


@app.capability(type="objinline")
async def objinline(request):
    """Inline: the object arrives as raw contents; answer its size."""
    size = sum(len(raw) for raw in request.raw_input_contents)
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    out = response.outputs.add(name="size", datatype="INT64", shape=[1])
    out.contents.int64_contents.append(size)
    return response
