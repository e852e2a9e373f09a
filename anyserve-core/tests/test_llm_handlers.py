"""The KServe handlers ``@app.chat``, ``@app.completion`` and ``@app.embed`` build, in-process."""

from __future__ import annotations

import asyncio
import struct

import pytest

from anyserve import AnyServe, Context, ModelInferRequest, Stream
from anyserve.errors import Cancelled, HandlerError, InvalidRequest
from anyserve.llm import (
    ChatRequest,
    CompletionRequest,
    Delta,
    Embeddings,
    EmbedRequest,
    Message,
    Usage,
    kserve,
)

# -- handlers ---------------------------------------------------------------------------------------


def _handlers(app: AnyServe, query: dict) -> tuple:
    """The (streaming, unary) handler functions registered for ``query``."""
    (stream,) = app.candidates(query, stream=True)
    (unary,) = app.candidates(query, stream=False)
    return stream.func, unary.func


def _chat_request(text: str = "hi", **fields) -> ModelInferRequest:
    return kserve.chat_request(ChatRequest("m", [Message("user", text)]), fields, model_name="m")


def _streamed(handler, request: ModelInferRequest) -> list[Delta]:
    """Run a sync streaming handler against a standalone ``Stream`` and read back its deltas."""
    stream = Stream()
    handler(request, Context(), stream)
    stream.close()
    return [kserve.read_delta(r.infer_response) for r in stream]


def test_app_chat_registers_a_streaming_and_a_unary_handler():
    """``@app.chat`` offers ``{type: chat, model}`` twice, with the convention's tensors declared."""
    app = AnyServe()

    @app.chat(model="m")
    def chat(request: ChatRequest):
        yield "x"

    assert len(app.handlers) == 2
    assert {h.stream for h in app.handlers} == {True, False}
    for handler in app.handlers:
        assert handler.capability == {"type": "chat", "model": "m"}
        assert not handler.is_async
        assert handler.name == chat.__qualname__
        assert [(t.name, t.datatype) for t in handler.inputs] == [("messages", "BYTES")]
        assert [(t.name, t.datatype) for t in handler.outputs] == [
            ("text_output", "BYTES"),
            ("finish_reason", "BYTES"),
        ]
    assert chat is not None  # the decorator gives the function back


def test_app_completion_declares_text_input():
    """``@app.completion`` offers ``{type: completion, model}`` reading ``text_input``."""
    app = AnyServe()

    @app.completion(model="c")
    def complete(request: CompletionRequest):
        yield request.prompt[::-1]

    for handler in app.handlers:
        assert handler.capability == {"type": "completion", "model": "c"}
        assert [t.name for t in handler.inputs] == ["text_input"]
    _, unary = _handlers(app, {"type": "completion"})
    request = kserve.completion_request(CompletionRequest("c", "abc"), {})
    assert kserve.read_delta(unary(request, Context())).text == "cba"


def test_type_attribute_overrides_chat():
    """``@app.chat(model=..., type=...)`` registers under the given type instead of ``chat``."""
    app = AnyServe()

    @app.chat(model="m", type="large", tier="gold")
    def chat(request):
        yield "x"

    assert all(h.capability == {"type": "large", "model": "m", "tier": "gold"} for h in app.handlers)
    assert not list(app.candidates({"type": "chat"}, stream=False))


def test_unary_handler_joins_deltas_and_fills_in_stop_and_counted_usage():
    """Without a finish reason or usage from the function: ``stop``, and one token per non-empty delta."""
    app = AnyServe()
    seen: list[ChatRequest] = []

    @app.chat(model="m")
    def chat(request: ChatRequest):
        seen.append(request)
        yield "Hel"
        yield ""
        yield Delta("lo")
        yield "!"

    _, unary = _handlers(app, {"type": "chat", "model": "m"})
    response = unary(_chat_request("hey", temperature=0.5), Context())
    assert kserve.read_delta(response) == Delta("Hello!", "stop", Usage(0, 3))
    assert seen[0].messages == [Message("user", "hey")]
    assert seen[0].sampling.temperature == 0.5


def test_unary_handler_reports_the_functions_usage_and_finish_reason():
    """Usage and ``length`` from the function's last delta are what the answer carries."""
    app = AnyServe()

    @app.chat(model="m")
    def chat(request):
        yield "a"
        yield Delta("b", finish_reason="length", usage=Usage(prompt_tokens=5, completion_tokens=2))
        yield "never read"

    _, unary = _handlers(app, {"model": "m"})
    assert kserve.read_delta(unary(_chat_request(), Context())) == Delta("ab", "length", Usage(5, 2))


def test_unary_handler_concatenates_logprobs():
    """Each delta's logprobs entries are joined in order in the unary answer."""
    app = AnyServe()

    @app.chat(model="m")
    def chat(request):
        yield Delta("a", logprobs=[{"token": "a", "logprob": -1.0}])
        yield Delta("b", logprobs=[{"token": "b", "logprob": -2.0}])

    _, unary = _handlers(app, {"model": "m"})
    delta = kserve.read_delta(unary(_chat_request(), Context()))
    assert delta.logprobs == [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -2.0}]


def test_a_function_returning_a_string_works_for_both_handlers():
    """A function may return the whole answer instead of yielding it."""
    app = AnyServe()

    @app.chat(model="m")
    def chat(request):
        return "whole answer"

    stream, unary = _handlers(app, {"model": "m"})
    assert kserve.read_delta(unary(_chat_request(), Context())) == Delta("whole answer", "stop", Usage(0, 1))
    assert _streamed(stream, _chat_request()) == [Delta("whole answer"), Delta("", "stop", Usage(0, 1))]


def test_a_function_taking_the_context_gets_it():
    """A two-parameter function is called with ``(request, context)``."""
    app = AnyServe()
    got: list = []

    @app.chat(model="m")
    def chat(request, context):
        got.append(context)
        yield "x"

    _, unary = _handlers(app, {"model": "m"})
    context = Context(request_id="r1")
    unary(_chat_request(), context)
    assert got == [context]


def test_streaming_handler_sends_one_response_per_delta_then_the_final_one():
    """Each delta is a response of its own; the last carries the finish reason and usage."""
    app = AnyServe()

    @app.chat(model="m")
    def chat(request):
        yield "a"
        yield "b"
        yield "c"

    stream, _ = _handlers(app, {"model": "m"})
    assert _streamed(stream, _chat_request()) == [Delta("a"), Delta("b"), Delta("c"), Delta("", "stop", Usage(0, 3))]


def test_streaming_handler_ends_at_the_functions_finish_delta():
    """A delta with a finish reason is the last response, with its text, and stops the generator."""
    app = AnyServe()
    closed: list[bool] = []

    @app.chat(model="m")
    def chat(request):
        try:
            yield "a"
            yield Delta("b", "length", Usage(2, 2))
            yield "never sent"
        finally:
            closed.append(True)

    stream, _ = _handlers(app, {"model": "m"})
    assert _streamed(stream, _chat_request()) == [Delta("a"), Delta("b", "length", Usage(2, 2))]
    assert closed == [True]


def test_async_handlers_stream_and_join():
    """``async def`` generators give ``async`` handlers: the stream awaits ``drain``, the unary joins."""
    app = AnyServe()

    @app.chat(model="m")
    async def chat(request):
        for token in ("x", "y"):
            await asyncio.sleep(0)
            yield token

    stream_handler, unary = _handlers(app, {"model": "m"})
    assert all(h.is_async for h in app.handlers)
    sent: list = []
    drained: list[int] = []

    async def room() -> None:
        drained.append(len(sent))

    # A stream built with a sink, as the runtime builds one; ``room`` is what ``drain`` awaits.
    asyncio.run(stream_handler(_chat_request(), Context(), Stream(sent.append, room=room)))
    deltas = [kserve.read_delta(r.infer_response) for r in sent]
    assert deltas == [Delta("x"), Delta("y"), Delta("", "stop", Usage(0, 2))]
    assert drained == [1, 2]  # drained after each delta
    response = asyncio.run(unary(_chat_request(), Context()))
    assert kserve.read_delta(response) == Delta("xy", "stop", Usage(0, 2))


def test_async_function_returning_the_whole_answer():
    """An ``async def`` that returns (not yields) its answer is served as one delta."""
    app = AnyServe()

    @app.chat(model="m")
    async def chat(request):
        return Delta("done", usage=Usage(1, 1))

    stream_handler, unary = _handlers(app, {"model": "m"})
    assert kserve.read_delta(asyncio.run(unary(_chat_request(), Context()))) == Delta("done", "stop", Usage(1, 1))
    sent: list = []
    asyncio.run(stream_handler(_chat_request(), Context(), Stream(sent.append)))
    assert kserve.read_delta(sent[-1].infer_response) == Delta("", "stop", Usage(1, 1))


def test_async_stream_handler_stops_at_the_finish_delta_and_closes_the_generator():
    """The async streaming handler ends at a finish delta and closes the async generator."""
    app = AnyServe()
    closed: list[bool] = []

    @app.chat(model="m")
    async def chat(request):
        try:
            yield "a"
            yield Delta("", "length")
            yield "never"
        finally:
            closed.append(True)

    stream_handler, _ = _handlers(app, {"model": "m"})
    sent: list = []
    asyncio.run(stream_handler(_chat_request(), Context(), Stream(sent.append)))
    assert [kserve.read_delta(r.infer_response) for r in sent] == [Delta("a"), Delta("", "length", Usage(0, 1))]
    assert closed == [True]


def test_a_function_yielding_something_else_is_a_handler_error():
    """Yielding neither ``str`` nor ``Delta`` is a ``HandlerError`` naming what was yielded."""
    app = AnyServe()

    @app.chat(model="m")
    def chat(request):
        yield 42

    stream, unary = _handlers(app, {"model": "m"})
    with pytest.raises(HandlerError, match="yielded int"):
        unary(_chat_request(), Context())
    with pytest.raises(HandlerError, match="yielded int"):
        stream(_chat_request(), Context(), Stream())


def test_a_bad_request_reaches_no_function():
    """The request is read (and refused) before the function runs."""
    app = AnyServe()
    called: list[bool] = []

    @app.chat(model="m")
    def chat(request):
        called.append(True)
        yield "x"

    _, unary = _handlers(app, {"model": "m"})
    with pytest.raises(InvalidRequest):
        unary(ModelInferRequest(model_name="m"), Context())
    assert called == []


def test_unary_sync_handler_stops_when_the_context_is_cancelled():
    """Once ``context.cancelled`` turns true the unary handler raises ``Cancelled`` and closes the generator."""
    app = AnyServe()
    context = Context()
    produced: list[str] = []
    closed: list[bool] = []

    @app.chat(model="m")
    def chat(request):
        try:
            for token in ("a", "b", "c", "d"):
                produced.append(token)
                if token == "b":
                    context.cancel()  # the client leaves while "b" is being generated
                yield token
        finally:
            closed.append(True)

    _, unary = _handlers(app, {"model": "m"})
    with pytest.raises(Cancelled):
        unary(_chat_request(), context)
    assert produced == ["a", "b"]
    assert closed == [True]


def test_sync_stream_handler_stops_when_the_stream_closes():
    """A stream whose client left raises ``Cancelled`` from ``send``, which closes the generator."""
    app = AnyServe()
    closed: list[bool] = []
    stream = Stream()

    @app.chat(model="m")
    def chat(request):
        try:
            yield "a"
            stream.close()  # the runtime closes the stream when the client goes away
            yield "b"
            yield "c"
        finally:
            closed.append(True)

    stream_handler, _ = _handlers(app, {"model": "m"})
    with pytest.raises(Cancelled):
        stream_handler(_chat_request(), Context(), stream)
    assert closed == [True]
    assert [kserve.read_delta(r.infer_response).text for r in stream] == ["a"]


def test_app_embed_answers_fp32_rows():
    """``@app.embed`` registers one unary handler answering ``embedding`` FP32 [n, d] and ``prompt_tokens``."""
    app = AnyServe()
    seen: list[EmbedRequest] = []

    @app.embed(model="e")
    def embed(request: EmbedRequest):
        seen.append(request)
        return Embeddings([[float(len(t)), 1.0] for t in request.texts], prompt_tokens=len(request.texts))

    (handler,) = app.handlers
    assert not handler.stream
    assert handler.capability == {"type": "embed", "model": "e"}
    assert [(t.name, t.datatype, t.shape) for t in handler.outputs] == [("embedding", "FP32", (-1, -1))]
    response = handler.func(kserve.embed_request(EmbedRequest("e", ["ab", "cde"]), {}), Context())
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("embedding", "FP32", [2, 2])
    rows, tokens = kserve.read_embeddings(response)
    assert [struct.unpack("<2f", r) for r in rows] == [(2.0, 1.0), (3.0, 1.0)]
    assert tokens == 2
    assert seen[0].texts == ["ab", "cde"]


def test_app_embed_takes_a_numpy_array_and_async_functions():
    """An embed function may return a bare 2-D array, and may be ``async``."""
    np = pytest.importorskip("numpy")
    app = AnyServe()

    @app.embed(model="e")
    async def embed(request):
        return np.ones((len(request.texts), 3), dtype=np.float32)

    (handler,) = app.handlers
    assert handler.is_async
    response = asyncio.run(handler.func(kserve.embed_request(EmbedRequest("e", ["a"]), {}), Context()))
    rows, tokens = kserve.read_embeddings(response)
    assert rows == [struct.pack("<3f", 1.0, 1.0, 1.0)]
    assert tokens == 0


def test_app_embed_refuses_a_row_count_mismatch():
    """A function that returns the wrong number of rows fails loudly rather than misaligning texts."""
    app = AnyServe()

    @app.embed(model="e")
    def embed(request):
        return [[0.0]]

    (handler,) = app.handlers
    with pytest.raises(ValueError, match="1 rows for 2 texts"):
        handler.func(kserve.embed_request(EmbedRequest("e", ["a", "b"]), {}), Context())
