"""The LLM handler convention in-process: options, their KServe v2 mapping, and the handlers ``@app.chat`` builds."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from anyserve import AnyServe, Context, ModelInferRequest, ModelInferResponse, Stream
from anyserve.errors import Cancelled, HandlerError, InvalidRequest
from anyserve.llm import (
    ChatRequest,
    CompletionRequest,
    Delta,
    Embeddings,
    EmbedRequest,
    Message,
    OptionError,
    Sampling,
    Usage,
    kserve,
    read_chat,
    read_completion,
    read_embed,
    sampling_fields,
    split_options,
)
from anyserve.protocol import names

# -- options ---------------------------------------------------------------------------------------


def test_split_options_reads_the_convention_fields_into_sampling():
    """Every field the convention defines lands typed in ``Sampling``; ``user`` is kept apart."""
    sampling, user, extra = split_options(
        {
            "max_tokens": 16,
            "temperature": 0.5,
            "top_p": 1,
            "stop": ["\n", "END"],
            "seed": -3,
            "logprobs": True,
            "top_logprobs": 20,
            "n": 1,
            "user": "u-1",
        }
    )
    assert sampling == Sampling(
        max_tokens=16, temperature=0.5, top_p=1.0, stop=("\n", "END"), seed=-3, logprobs=True, top_logprobs=20, n=1
    )
    assert isinstance(sampling.top_p, float)
    assert user == "u-1"
    assert extra == {}


def test_split_options_takes_a_single_stop_string():
    """``stop`` may be one string: it becomes a one-element tuple."""
    sampling, _, _ = split_options({"stop": "###"})
    assert sampling.stop == ("###",)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"stop": 3}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"user": 42}, "user"),
        ({"max_tokens": True}, "max_tokens"),
        ({"seed": False}, "seed"),
        ({"n": True}, "n"),
        ({"temperature": True}, "temperature"),
        ({"logprobs": 1}, "logprobs"),
    ],
)
def test_split_options_refuses_a_bad_value_naming_the_field(fields, param):
    """A wrong type or range is an ``OptionError`` (an ``InvalidRequest``) whose ``param`` is the field."""
    with pytest.raises(OptionError) as caught:
        split_options(fields)
    assert caught.value.param == param
    assert isinstance(caught.value, InvalidRequest)
    assert str(caught.value).startswith(f"{param}: ")


def test_split_options_passes_unknown_fields_through_in_extra():
    """Fields the convention does not define (engine knobs, ``response_format``) reach the handler untouched."""
    sampling, user, extra = split_options({"top_k": 40, "response_format": {"type": "json_object"}, "temperature": 0})
    assert sampling.temperature == 0.0
    assert user is None
    assert extra == {"top_k": 40, "response_format": {"type": "json_object"}}


def test_max_completion_tokens_wins_over_max_tokens():
    """OpenAI's newer name takes precedence when a client sends both, in either order."""
    assert split_options({"max_tokens": 10, "max_completion_tokens": 20})[0].max_tokens == 20
    assert split_options({"max_completion_tokens": 20, "max_tokens": 10})[0].max_tokens == 20
    assert split_options({"max_completion_tokens": 7})[0].max_tokens == 7


def test_none_values_count_as_absent():
    """``null`` fields (OpenAI SDKs send them) neither fail checks nor land in ``extra``."""
    sampling, user, extra = split_options(
        {"temperature": None, "max_tokens": None, "user": None, "stop": None, "top_k": None}
    )
    assert sampling == Sampling()
    assert user is None
    assert extra == {}


def test_sampling_fields_round_trips_through_split_options():
    """``sampling_fields`` writes flat fields that ``split_options`` reads back to the same values."""
    sampling = Sampling(max_tokens=5, temperature=0.7, stop=("a", "b"), seed=1, logprobs=True, top_logprobs=3)
    fields = sampling_fields(sampling, "alice", {"top_k": 4})
    assert fields["stop"] == ["a", "b"]
    assert "top_p" not in fields and "n" not in fields  # defaults are left out
    assert split_options(fields) == (sampling, "alice", {"top_k": 4})
    assert sampling_fields(Sampling(), None, {}) == {}


# -- options <-> KServe parameters ------------------------------------------------------------


def test_put_and_read_options_round_trip_typed_scalars_and_json_values():
    """Scalars become typed parameters, lists and objects ``<name>.json`` strings; reading gives them back."""
    fields = {
        "temperature": 0.25,
        "max_tokens": 9,
        "logprobs": True,
        "user": "bob",
        "stop": ["\n"],
        "response_format": {"type": "json_object"},
        "huge": 2**64,
        "skipped": None,
    }
    request = ModelInferRequest()
    kserve.put_options(request.parameters, fields)
    params = request.parameters
    assert params["temperature"].double_param == 0.25
    assert params["max_tokens"].int64_param == 9
    assert params["logprobs"].bool_param is True
    assert params["user"].string_param == "bob"
    assert json.loads(params["stop.json"].string_param) == ["\n"]
    assert "huge.json" in params  # beyond int64: carried as JSON, not refused
    assert "skipped" not in params
    back = kserve.read_options(request.parameters)
    assert back == {k: v for k, v in fields.items() if v is not None}
    assert type(back["max_tokens"]) is int and type(back["logprobs"]) is bool


def test_read_options_skips_the_parameters_anyserve_uses_itself():
    """Routing, transport and Triton parameters are not options (nor is ``model``, read apart)."""
    request = ModelInferRequest()
    request.parameters["capability.type"].string_param = "chat"
    request.parameters["anyserve.x"].string_param = "1"
    request.parameters["binary_data_output"].bool_param = True
    request.parameters["triton_final_response"].bool_param = True
    request.parameters["stream"].bool_param = True
    request.parameters["model"].string_param = "m"
    request.parameters["top_k"].int64_param = 5
    assert kserve.read_options(request.parameters) == {"top_k": 5}


def test_read_options_refuses_a_json_parameter_that_is_not_json():
    """A ``.json`` parameter must hold JSON; the error names the parameter."""
    request = ModelInferRequest()
    request.parameters["stop.json"].string_param = "[unclosed"
    with pytest.raises(InvalidRequest, match=r"stop\.json"):
        kserve.read_options(request.parameters)


# -- requests ---------------------------------------------------------------------------------------


def _chat() -> ChatRequest:
    messages = [
        Message("system", "be brief"),
        Message(
            "user",
            "",
            {
                "name": "ann",
                "content": [
                    {"type": "text", "text": "what is "},
                    {"type": "image_url", "image_url": {"url": "http://x/cat.png"}},
                    {"type": "text", "text": "this?"},
                ],
            },
        ),
    ]
    sampling = Sampling(max_tokens=32, temperature=0.0, stop=("\n",))
    return ChatRequest("alias-m", messages, sampling, "u7", {"top_k": 3, "tools": [{"type": "function"}]}, "rid-1")


def test_chat_request_round_trips_through_read_chat():
    """A ``ChatRequest`` written as KServe tensors and parameters reads back the same, content parts included."""
    original = _chat()
    request = kserve.chat_request(original, sampling_fields(original.sampling, original.user, original.extra))
    assert [t.name for t in request.inputs] == [names.MESSAGES_INPUT]
    assert request.parameters[names.MODEL_PARAMETER].string_param == "alias-m"
    back = read_chat(request)
    assert back.model == "alias-m"
    assert back.id == "rid-1"
    assert back.sampling == original.sampling
    assert back.user == "u7"
    assert back.extra == original.extra
    assert back.messages[0] == Message("system", "be brief")
    user = back.messages[1]
    assert user.role == "user"
    assert user.content == "what is this?"  # the text parts joined
    assert user.extra["name"] == "ann"
    # The image part is not text: the whole parts list is kept for the handler.
    assert user.extra["content"][1] == {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}


def test_read_chat_falls_back_to_the_model_name_without_a_model_parameter():
    """Without a ``model`` parameter the request's ``model_name`` is the model asked for."""
    request = kserve.chat_request(ChatRequest("", [Message("user", "hi")]), {}, model_name="chat-m")
    assert names.MODEL_PARAMETER not in request.parameters
    assert read_chat(request).model == "chat-m"


def test_read_chat_takes_text_input_as_one_user_message():
    """Triton's generate extension sends ``text_input`` alone: one user message."""
    request = ModelInferRequest(model_name="m")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hello")
    request.parameters["max_tokens"].int64_param = 4
    chat = read_chat(request)
    assert chat.messages == [Message("user", "hello")]
    assert chat.sampling.max_tokens == 4
    assert chat.model == "m"


def _request_with(name: str, datatype: str, values: list) -> ModelInferRequest:
    request = ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
    if datatype == "BYTES":
        tensor.contents.bytes_contents.extend(values)
    else:
        tensor.contents.int_contents.extend(values)
    return request


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (ModelInferRequest(model_name="m"), "needs a BYTES input 'messages'"),
        (_request_with("prompt", "BYTES", [b"x"]), r"got \['prompt'\]"),
        (_request_with("messages", "INT32", [1]), "must be BYTES"),
        (_request_with("messages", "BYTES", [b"not json"]), "not a JSON array"),
        (_request_with("messages", "BYTES", [b"[]"]), "non-empty JSON array"),
        (_request_with("messages", "BYTES", [b'{"role": "user"}']), "non-empty JSON array"),
        (_request_with("messages", "BYTES", [b"[]", b"[]"]), "exactly one text, got 2"),
        (_request_with("messages", "BYTES", [b'[{"content": "x"}]']), r"messages\[0\]\.role"),
        (_request_with("messages", "BYTES", [b'[{"role": "user", "content": 3}]']), r"messages\[0\]\.content"),
        (_request_with("messages", "BYTES", [b"\xff"]), "not UTF-8"),
    ],
)
def test_read_chat_refuses_a_malformed_request_clearly(request_, match):
    """A chat request without usable messages is an ``InvalidRequest`` saying what is wrong."""
    with pytest.raises(InvalidRequest, match=match):
        read_chat(request_)


def test_read_chat_refuses_a_bad_option_naming_it():
    """Options read from parameters get the same checks as OpenAI fields."""
    request = _request_with("text_input", "BYTES", [b"hi"])
    request.parameters["temperature"].double_param = 9.0
    with pytest.raises(OptionError) as caught:
        read_chat(request)
    assert caught.value.param == "temperature"


def test_completion_request_round_trips_through_read_completion():
    """A ``CompletionRequest`` goes out as ``text_input`` and comes back with its prompt and options."""
    original = CompletionRequest("m", "Once upon", Sampling(max_tokens=3, seed=7), None, {"echo": False}, "c1")
    request = kserve.completion_request(original, sampling_fields(original.sampling, None, original.extra))
    assert [t.name for t in request.inputs] == [names.TEXT_INPUT]
    assert read_completion(request) == original


def test_read_completion_needs_text_input():
    """A completion request names the prompt input it lacks."""
    with pytest.raises(InvalidRequest, match="text_input"):
        read_completion(_request_with("messages", "BYTES", [b"[]"]))


def test_embed_request_round_trips_through_read_embed():
    """An ``EmbedRequest`` goes out as ``text_input`` [n] and comes back with every text in order."""
    original = EmbedRequest("e", ["one", "two", "three"], "u", {"dimensions": 8}, "e1")
    request = kserve.embed_request(original, sampling_fields(Sampling(), "u", original.extra))
    assert list(request.inputs[0].shape) == [3]
    assert read_embed(request) == original


def test_read_embed_also_reads_an_input_named_text():
    """``text`` (the MiniLM plugin's original name) carries the texts too."""
    typed = read_embed(_request_with("text", "BYTES", [b"a", b"b"]))
    assert typed.texts == ["a", "b"]


def test_read_embed_refuses_a_request_without_texts():
    """No ``text_input`` nor ``text``: an ``InvalidRequest`` naming the input it needs."""
    with pytest.raises(InvalidRequest, match="text_input"):
        read_embed(_request_with("other", "BYTES", [b"a"]))


def _pack(*elements: bytes) -> bytes:
    """BYTES raw contents: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def _raw_request(name: str, *elements: bytes) -> ModelInferRequest:
    request = ModelInferRequest(model_name="m", id="raw-1")
    request.inputs.add(name=name, datatype="BYTES", shape=[len(elements)])
    request.raw_input_contents.append(_pack(*elements))
    return request


def test_raw_input_contents_are_read():
    """Clients that send raw contents (Triton's do) are read like typed ones."""
    assert read_completion(_raw_request("text_input", "héllo".encode())).prompt == "héllo"
    assert read_embed(_raw_request("text_input", b"x", b"yz")).texts == ["x", "yz"]
    messages = json.dumps([{"role": "user", "content": "raw"}]).encode()
    assert read_chat(_raw_request("messages", messages)).messages == [Message("user", "raw")]


def test_truncated_raw_input_is_an_invalid_request():
    """A raw BYTES buffer cut inside an element is refused, never read short."""
    request = ModelInferRequest(model_name="m")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 10) + b"abc")
    with pytest.raises(InvalidRequest):
        read_completion(request)


# -- responses --------------------------------------------------------------------------------------


def test_delta_response_round_trips_through_read_delta():
    """Text, finish reason, usage and logprobs survive the trip through a ``ModelInferResponse``."""
    logprobs = [{"token": "hi", "logprob": -0.5, "top_logprobs": [{"token": "hi", "logprob": -0.5}]}]
    delta = Delta("hi", "length", Usage(3, 4), logprobs)
    request = ModelInferRequest(model_name="m", model_version="1", id="r")
    response = kserve.delta_response(delta, request)
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "r")
    assert [o.name for o in response.outputs] == [names.TEXT_OUTPUT, names.FINISH_REASON_OUTPUT]
    assert response.parameters["prompt_tokens"].int64_param == 3
    assert response.parameters["completion_tokens"].int64_param == 4
    assert not response.raw_output_contents
    assert kserve.read_delta(response) == delta


def test_delta_response_for_a_plain_delta_has_text_only():
    """A mid-stream delta carries ``text_output`` alone: no finish reason, no usage parameters."""
    response = kserve.delta_response(Delta("tok"), ModelInferRequest())
    assert [o.name for o in response.outputs] == [names.TEXT_OUTPUT]
    assert not response.parameters
    assert kserve.read_delta(response) == Delta("tok")


def test_delta_response_answers_a_raw_request_with_raw_outputs():
    """Triton's clients read only raw contents, so a raw request gets raw outputs, in output order."""
    request = _raw_request("text_input", b"prompt")
    response = kserve.delta_response(Delta("out", "stop"), request)
    assert list(response.raw_output_contents) == [_pack(b"out"), _pack(b"stop")]
    assert all(not o.contents.bytes_contents for o in response.outputs)
    assert kserve.read_delta(response) == Delta("out", "stop")


def test_embeddings_response_from_list_rows():
    """List rows become ``embedding`` FP32 [n, d] raw little-endian, and ``prompt_tokens`` travels along."""
    rows = [[1.0, 2.0, 3.0], [-1.5, 0.0, 0.25]]
    response = kserve.embeddings_response(Embeddings(rows, prompt_tokens=6), ModelInferRequest(id="e"), 2)
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("embedding", "FP32", [2, 3])
    got, tokens = kserve.read_embeddings(response)
    assert tokens == 6
    assert [list(struct.unpack("<3f", row)) for row in got] == rows


def test_embeddings_response_from_a_numpy_array():
    """A 2-D numpy array (any float dtype) is written as FP32 rows."""
    np = pytest.importorskip("numpy")
    vectors = np.arange(8, dtype=np.float64).reshape(4, 2)
    response = kserve.embeddings_response(Embeddings(vectors), ModelInferRequest(), 4)
    got, tokens = kserve.read_embeddings(response)
    assert tokens == 0
    assert np.array_equal(np.frombuffer(b"".join(got), dtype="<f4").reshape(4, 2), vectors)


def test_read_embeddings_reads_typed_fp32_contents_too():
    """A server that answers with ``fp32_contents`` instead of raw bytes is read the same."""
    response = ModelInferResponse()
    out = response.outputs.add(name="embedding", datatype="FP32", shape=[1, 2])
    out.contents.fp32_contents.extend([0.5, 1.5])
    got, _ = kserve.read_embeddings(response)
    assert got == [struct.pack("<2f", 0.5, 1.5)]


@pytest.mark.parametrize(
    ("vectors", "match"),
    [
        ([[1.0], [2.0]], "2 rows for 3 texts"),
        ("zeros 2x4", "2 rows for 3 texts"),
        ("zeros 3", "one row per text"),
        ([[1.0, 2.0], [1.0], [3.0, 4.0]], "same length"),
    ],
)
def test_embeddings_response_refuses_rows_that_do_not_fit(vectors, match):
    """Row count must match the texts, and rows must be one width: a ``ValueError`` otherwise."""
    if isinstance(vectors, str):  # a numpy array, when numpy is installed (core does not need it)
        np = pytest.importorskip("numpy")
        vectors = np.zeros((2, 4)) if vectors == "zeros 2x4" else np.zeros(3)
    with pytest.raises(ValueError, match=match):
        kserve.embeddings_response(Embeddings(vectors), ModelInferRequest(), 3)


def test_read_embeddings_refuses_an_answer_without_embedding():
    """An answer missing the ``embedding`` output is an error, not an empty result."""
    with pytest.raises(InvalidRequest, match="embedding"):
        kserve.read_embeddings(ModelInferResponse())


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
