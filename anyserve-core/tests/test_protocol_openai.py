"""OpenAI request bodies read into the LLM convention, and the OpenAI answers built from its deltas."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from anyserve.errors import InvalidRequest
from anyserve.llm import ChatRequest, CompletionRequest, Delta, EmbedRequest, Message, OptionError, Sampling, Usage
from anyserve.protocol import openai_bodies as bodies
from anyserve.protocol.openai import (
    error_body,
    read_chat,
    read_completion,
    read_embeddings,
    read_responses,
)


def _body(**data) -> bytes:
    return json.dumps(data).encode()


# -- reading requests ---------------------------------------------------------------------------------


def test_read_chat_reads_messages_options_and_stream():
    """A chat body gives a typed ``ChatRequest``, the stream flags, and the option fields for the handler."""
    read = read_chat(
        _body(
            model="m",
            messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hi", "name": "ann"}],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.3,
            max_completion_tokens=12,
            user="u1",
            top_k=50,
            response_format={"type": "json_object"},
            seed=None,
        ),
        "rid",
    )
    assert read.kind == "chat"
    assert read.model == "m"
    assert read.stream is True
    assert read.include_usage is True
    typed = read.typed
    assert isinstance(typed, ChatRequest)
    assert typed.id == "rid"
    assert typed.messages == [Message("system", "s"), Message("user", "hi", {"name": "ann"})]
    assert typed.sampling == Sampling(max_tokens=12, temperature=0.3)
    assert typed.user == "u1"
    assert typed.extra == {"top_k": 50, "response_format": {"type": "json_object"}}
    # The fields the handler reads back: every option sent, none of the front's own, no nulls.
    assert read.fields == {
        "temperature": 0.3,
        "max_completion_tokens": 12,
        "user": "u1",
        "top_k": 50,
        "response_format": {"type": "json_object"},
    }


def test_read_chat_defaults_to_unary_without_usage_chunk():
    """Without ``stream`` the request is unary and no usage chunk is asked for."""
    read = read_chat(_body(model="m", messages=[{"role": "user", "content": "hi"}]), "r")
    assert (read.stream, read.include_usage) == (False, False)
    assert read.fields == {}


def test_read_completion_reads_prompt_and_logprobs_count():
    """The legacy ``logprobs`` count becomes ``logprobs=True`` and ``top_logprobs=<count>``."""
    read = read_completion(_body(model="m", prompt="Once", logprobs=3, max_tokens=5, echo=False), "r")
    typed = read.typed
    assert isinstance(typed, CompletionRequest)
    assert typed.prompt == "Once"
    assert typed.sampling.logprobs is True
    assert typed.sampling.top_logprobs == 3
    assert typed.sampling.max_tokens == 5
    assert typed.extra == {"echo": False}
    assert read.fields == {"logprobs": True, "top_logprobs": 3, "max_tokens": 5, "echo": False}


def test_read_completion_takes_a_one_element_prompt_list():
    """``prompt: ["text"]`` is one prompt, as SDKs sometimes send it."""
    assert read_completion(_body(model="m", prompt=["only"]), "r").typed.prompt == "only"


def test_read_embeddings_reads_input_and_encoding_format():
    """``input`` a string or a list of strings; ``encoding_format`` is the front's, other fields the handler's."""
    read = read_embeddings(_body(model="e", input=["a", "b"], encoding_format="base64", dimensions=8, user="u"), "r")
    typed = read.typed
    assert isinstance(typed, EmbedRequest)
    assert typed.texts == ["a", "b"]
    assert typed.user == "u"
    assert typed.extra == {"dimensions": 8}
    assert read.encoding_format == "base64"
    assert read.fields == {"dimensions": 8, "user": "u"}
    single = read_embeddings(_body(model="e", input="one"), "r")
    assert single.typed.texts == ["one"]
    assert single.encoding_format == "float"


def test_read_responses_maps_instructions_input_and_max_output_tokens():
    """``instructions`` is a system message, ``input`` the user's, ``max_output_tokens`` the ``max_tokens`` option."""
    read = read_responses(
        _body(
            model="m",
            instructions="be brief",
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hel"}, {"type": "input_text", "text": "lo"}],
                },
                {"role": "assistant", "content": "hi"},
            ],
            max_output_tokens=7,
            stream=True,
            store=False,
        ),
        "r",
    )
    assert read.kind == "responses"
    assert read.stream is True
    typed = read.typed
    assert typed.messages == [Message("system", "be brief"), Message("user", "hello"), Message("assistant", "hi")]
    assert typed.sampling.max_tokens == 7
    assert typed.extra == {"store": False}
    assert read.fields == {"max_tokens": 7, "store": False}


def test_read_responses_takes_a_plain_string_input():
    """``input: "text"`` is one user message."""
    assert read_responses(_body(model="m", input="hi"), "r").typed.messages == [Message("user", "hi")]


@pytest.mark.parametrize(
    ("reader", "body", "param"),
    [
        (read_chat, {"messages": [{"role": "user", "content": "x"}]}, "model"),
        (read_chat, {"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        (read_chat, {"model": "m"}, "messages"),
        (read_chat, {"model": "m", "messages": []}, "messages"),
        (read_chat, {"model": "m", "messages": "hi"}, "messages"),
        (read_chat, {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (read_chat, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        (
            read_chat,
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": 1},
            "stream_options",
        ),
        (
            read_chat,
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
        (read_chat, {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
        (read_completion, {"model": "m", "prompt": ["a", "b"]}, "prompt"),
        (read_completion, {"model": "m", "prompt": [1, 2, 3]}, "prompt"),
        (read_completion, {"model": "m", "prompt": [[1, 2]]}, "prompt"),
        (read_completion, {"model": "m"}, "prompt"),
        (read_completion, {"model": "m", "prompt": "x", "logprobs": 6}, "logprobs"),
        (read_completion, {"model": "m", "prompt": "x", "logprobs": "3"}, "logprobs"),
        (read_embeddings, {"model": "m", "input": [1, 2]}, "input"),
        (read_embeddings, {"model": "m", "input": []}, "input"),
        (read_embeddings, {"model": "m", "input": ["a", 2]}, "input"),
        (read_embeddings, {"model": "m"}, "input"),
        (read_embeddings, {"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        (read_responses, {"model": "m"}, "input"),
        (read_responses, {"model": "m", "input": 3}, "input"),
        (read_responses, {"model": "m", "input": ["text"]}, "input[0]"),
        (read_responses, {"model": "m", "input": "x", "instructions": 1}, "instructions"),
        (read_responses, {"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        (read_responses, {"model": "m", "input": "x", "max_output_tokens": "5"}, "max_output_tokens"),
        (
            read_responses,
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content",
        ),
    ],
)
def test_a_bad_field_is_an_option_error_naming_it(reader, body, param):
    """Each refusal is a 400 whose ``param`` names the field at fault, as OpenAI errors carry it."""
    with pytest.raises(OptionError) as caught:
        reader(_body(**body), "r")
    assert caught.value.param == param
    assert param in str(caught.value)


@pytest.mark.parametrize("reader", [read_chat, read_completion, read_embeddings, read_responses])
@pytest.mark.parametrize(("body", "match"), [(b"{not json", "not valid JSON"), (b"[1]", "must be a JSON object")])
def test_a_body_that_is_not_a_json_object_is_refused(reader, body, match):
    """Malformed or non-object JSON is an ``InvalidRequest`` saying so, before any field is read."""
    with pytest.raises(InvalidRequest, match=match):
        reader(body, "r")


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (["hi"], r"messages\[0\]: must be an object"),
        ([{"content": "x"}], r"messages\[0\]\.role"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": 5}], r"messages\[1\]\.content"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], r"messages\[0\]\.content"),
    ],
)
def test_a_bad_message_is_refused_naming_it(messages, match):
    """A malformed message is an ``InvalidRequest`` naming its index and field, in the message and as ``param``."""
    with pytest.raises(InvalidRequest, match=match) as caught:
        read_chat(_body(model="m", messages=messages), "r")
    assert caught.value.param.startswith("messages[")


def test_error_body_has_openai_shape():
    """Errors are ``{"error": {message, type, param, code}}`` with the type OpenAI uses for the status."""
    assert error_body(400, "bad", param="n") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": None}
    }
    assert error_body(404, "no")["error"]["type"] == "not_found_error"
    assert error_body(503, "busy")["error"]["type"] == "server_error"


# -- building answers -----------------------------------------------------------------------------------


def test_chat_completion_body():
    """A unary chat answer: one assistant choice with the text, finish reason, logprobs and usage."""
    logprobs = [{"token": "hi", "logprob": -0.1, "top_logprobs": []}]
    body = bodies.chat_completion("c1", 100, "m", Delta("hi", "stop", Usage(2, 1), logprobs))
    assert body == {
        "id": "c1",
        "object": "chat.completion",
        "created": 100,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "logprobs": {"content": logprobs},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    assert bodies.chat_completion("c1", 100, "m", Delta("x"))["choices"][0]["logprobs"] is None


def test_chat_chunks_name_the_role_first_and_carry_null_usage_when_asked():
    """The first chunk names the role; with ``include_usage`` each chunk has ``usage: null``, then a usage chunk."""
    first = bodies.chat_chunk("c", 1, "m", Delta("a"), first=True, with_usage=True)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": None}]
    assert first["usage"] is None
    last = bodies.chat_chunk("c", 1, "m", Delta("", "length"), first=False, with_usage=False)
    assert last["choices"][0]["delta"] == {"content": ""}
    assert last["choices"][0]["finish_reason"] == "length"
    assert "usage" not in last
    usage = bodies.usage_chunk("c", 1, "m", "chat.completion.chunk", Usage(4, 6))
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}


def test_sse_frames():
    """Events are ``data: <compact JSON>`` lines; the stream ends with ``[DONE]``."""
    assert bodies.sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert bodies.named_sse("x", {"a": 1}) == b'event: x\ndata: {"a":1}\n\n'
    assert bodies.DONE == b"data: [DONE]\n\n"


def test_completion_body_with_legacy_logprobs():
    """Completions logprobs use the legacy parallel lists, ``text_offset`` counting from ``offset``."""
    logprobs = [
        {
            "token": "Hel",
            "logprob": -0.5,
            "top_logprobs": [{"token": "Hel", "logprob": -0.5}, {"token": "He", "logprob": -2.0}],
        },
        {"token": "lo", "logprob": -0.25, "top_logprobs": []},
    ]
    body = bodies.completion("t1", 5, "m", Delta("Hello", "stop", Usage(1, 2), logprobs), offset=10)
    assert body["object"] == "text_completion"
    (choice,) = body["choices"]
    assert choice["text"] == "Hello"
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] == {
        "tokens": ["Hel", "lo"],
        "token_logprobs": [-0.5, -0.25],
        "top_logprobs": [{"Hel": -0.5, "He": -2.0}, {}],
        "text_offset": [10, 13],
    }
    assert body["usage"]["total_tokens"] == 3
    plain = bodies.completion("t1", 5, "m", Delta("x"))
    assert plain["choices"][0]["logprobs"] is None
    assert "usage" not in plain


def test_embeddings_body_as_floats_and_base64():
    """Rows of little-endian float32 are sent as float lists, or as base64 of the same bytes."""
    vectors = [[0.5, -1.25, 3.0], [1.0, 0.0, 2.0]]
    rows = [struct.pack("<3f", *row) for row in vectors]
    floats = bodies.embeddings("e", rows, 7, "float")
    assert floats["object"] == "list"
    assert floats["model"] == "e"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in floats["data"])
    assert [d["embedding"] for d in floats["data"]] == vectors
    assert floats["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    b64 = bodies.embeddings("e", rows, 7, "base64")
    decoded = [list(struct.unpack("<3f", base64.b64decode(d["embedding"]))) for d in b64["data"]]
    assert decoded == vectors


def test_model_list_body():
    """``GET /v1/models`` lists one model card per id."""
    assert bodies.model_list(["a", "b"]) == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": 0, "owned_by": "anyserve"},
            {"id": "b", "object": "model", "created": 0, "owned_by": "anyserve"},
        ],
    }


def test_response_object_completed_and_incomplete():
    """A ``response`` holds one output message; hitting the limit makes it ``incomplete`` with the reason."""
    done = bodies.response_object("r1", 9, "m", status="completed", text="hi", usage=Usage(3, 1))
    assert done["object"] == "response"
    assert done["status"] == "completed"
    assert done["incomplete_details"] is None
    (item,) = done["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["id"] == "msg_r1"
    assert item["content"] == [{"type": "output_text", "text": "hi", "annotations": []}]
    assert done["usage"] == {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    started = bodies.response_object("r1", 9, "m", status="in_progress")
    assert started["output"] == [] and started["usage"] is None
    cut = bodies.response_object("r1", 9, "m", status=bodies.response_status("length"), text="h")
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert bodies.response_status("stop") == "completed"
    assert bodies.response_status(None) == "completed"


def _events(frames: bytes) -> list[tuple[str, dict]]:
    """``(event name, data)`` of each named SSE event in ``frames``, checking the name matches ``type``."""
    out = []
    for frame in frames.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = event_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == name
        out.append((name, data))
    return out


def _stream_events(finish_reason: str | None) -> list[tuple[str, dict]]:
    events = bodies.ResponseEvents("r1", 9, "m")
    frames = events.opening() + events.delta("Hel") + events.delta("lo") + events.closing(finish_reason, Usage(2, 2))
    return _events(frames)


def test_response_events_come_in_order_and_numbered():
    """A streamed response: the opening events, one delta each, then done events and ``response.completed``."""
    got = _stream_events("stop")
    assert [name for name, _ in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [data["sequence_number"] for _, data in got]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    by_name = dict(got)
    assert [data["delta"] for name, data in got if name == "response.output_text.delta"] == ["Hel", "lo"]
    assert by_name["response.output_text.done"]["text"] == "Hello"
    assert by_name["response.content_part.done"]["part"]["text"] == "Hello"
    assert by_name["response.output_item.done"]["item"]["content"][0]["text"] == "Hello"
    assert by_name["response.created"]["response"]["status"] == "in_progress"
    final = by_name["response.completed"]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"] == {"input_tokens": 2, "output_tokens": 2, "total_tokens": 4}
    item_ids = {data["item_id"] for _, data in got if "item_id" in data}
    assert item_ids == {"msg_r1"}


def test_response_events_end_incomplete_at_the_token_limit():
    """Generation cut by ``length`` ends with ``response.incomplete`` naming ``max_output_tokens``."""
    got = _stream_events("length")
    name, data = got[-1]
    assert name == "response.incomplete"
    assert data["response"]["status"] == "incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert "response.completed" not in [n for n, _ in got]


def test_response_events_failed():
    """A failure mid-stream is ``response.failed`` with the error and no output, numbered after what was sent."""
    events = bodies.ResponseEvents("r1", 9, "m")
    opening = _events(events.opening())
    ((name, data),) = _events(events.failed("engine died", "server_error"))
    assert name == "response.failed"
    assert data["sequence_number"] == opening[-1][1]["sequence_number"] + 1
    assert data["response"]["status"] == "failed"
    assert data["response"]["output"] == []
    assert data["response"]["error"] == {"code": "server_error", "message": "engine died"}
