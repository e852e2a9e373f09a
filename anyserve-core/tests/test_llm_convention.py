"""The LLM handler convention in-process: options and their KServe v2 mapping (the handlers: test_llm_handlers.py)."""

from __future__ import annotations

import json
import struct

import pytest

from anyserve import ModelInferRequest, ModelInferResponse
from anyserve.errors import InvalidRequest
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
        (_request_with("messages", "BYTES", [b"not json"]), "messages.* is not valid JSON"),
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
