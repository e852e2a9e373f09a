"""JSON in and out of every front is RFC 8259 JSON: refused numbers name their field, writes are always valid."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from anyserve.errors import InvalidRequest
from anyserve.llm.types import Delta
from anyserve.protocol import messages as pb
from anyserve.protocol.binary import parse_header_length
from anyserve.protocol.openai import read_chat
from anyserve.protocol.openai_bodies import chat_completion, embeddings, sse
from anyserve.protocol.strict_json import dumps, loads, loads_object
from anyserve.protocol.v2_json import parse_infer_json, response_to_json

LONG = "7" * 5000


def _strict(text: bytes) -> Any:
    """What any JSON reader must accept: no NaN, no Infinity."""

    def refuse(literal: str) -> None:
        raise AssertionError(f"invalid JSON written: {literal}")

    return json.loads(text, parse_constant=refuse)


def refused(body: str | bytes, *fragments: str, what: str = "request body") -> str:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(InvalidRequest) as info:
        loads_object(raw, what)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "int_max_str_digits" not in message and "Exceeds the limit" not in message
    assert info.value.code == "INVALID_ARGUMENT"
    return message


# -- reading -------------------------------------------------------------------------------------


def test_a_five_thousand_digit_integer_is_a_400_naming_its_field() -> None:
    message = refused(
        f'{{"replica_id": "r", "load": {{"cpu": {LONG}}}}}', "heartbeat: load.cpu = 7777", what="heartbeat"
    )
    assert "(5000 characters)" in message and "beyond the range of a double" in message
    assert len(message) < 300  # the number is not echoed whole
    refused(f'{{"xs": [1, 2, -{LONG}]}}', "xs[2] = -7777")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_naming_the_field(literal: str) -> None:
    refused(f'{{"capabilities": [{{"type": "chat", "load": {literal}}}]}}', f"capabilities[0].load = {literal}")


def test_numbers_beyond_a_double_are_refused_not_made_infinite() -> None:
    refused('{"a": {"b": 1e999}}', "a.b = 1e999", "beyond the range of a double")
    refused('{"a": -1' + "0" * 400 + ".5}", "a = -1000")


def test_integers_beyond_64_bits_read_as_doubles_whichever_reader_reads_them() -> None:
    big = 2**70
    fast = loads(json.dumps({"n": big}).encode())
    # a lone surrogate sends the body to the standard library's reader: same answer
    slow = loads(json.dumps({"n": big, "s": "\ud800"}).encode())
    assert fast["n"] == slow["n"] == float(big) and isinstance(slow["n"], float)
    assert slow["s"] == "\ud800"
    assert loads(b'{"u": 18446744073709551615, "i": -9223372036854775808, "s": "\\ud800"}')["u"] == 2**64 - 1


def test_a_kserve_request_with_a_refused_number_names_it() -> None:
    body = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, NaN]}]}'
    with pytest.raises(InvalidRequest, match=r"inputs\[0\]\.data\[1\] = NaN"):
        parse_infer_json(body.encode())
    with pytest.raises(InvalidRequest, match=r"parameters\.seed = 7777"):
        parse_infer_json(f'{{"parameters": {{"seed": {LONG}}}, "inputs": []}}'.encode())


def test_an_openai_body_with_infinity_is_a_400() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}'
    with pytest.raises(InvalidRequest, match="temperature = Infinity"):
        read_chat(body, "req-1")


def test_malformed_json_still_says_where() -> None:
    refused('{"a": }', "not valid JSON", "line 1 column 7")
    refused(b"[1]", "must be a JSON object, got list")


@pytest.mark.parametrize("value", [LONG, "²", "-1", "1.5", "", "12345678901234567890", "٣"])
def test_the_binary_header_length_takes_plain_short_integers_only(value: str) -> None:
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length must be a non-negative integer") as info:
        parse_header_length(value)
    assert len(str(info.value)) < 300


def test_the_binary_header_length_reads_a_length() -> None:
    assert parse_header_length(" 42 ") == 42 and parse_header_length(None) is None


# -- writing -------------------------------------------------------------------------------------


def test_non_finite_floats_are_written_null_by_either_writer() -> None:
    data = {"x": [math.nan, math.inf, -math.inf, 1.5]}
    assert _strict(dumps(data)) == {"x": [None, None, None, 1.5]}
    # an integer orjson cannot write sends everything to the standard library: same rule there
    data["big"] = 2**70
    assert _strict(dumps(data)) == {"x": [None, None, None, 1.5], "big": 2**70}
    # float subclasses (numpy's float64 is one) too
    assert _strict(dumps({"f": type("F", (float,), {})(math.nan)})) == {"f": None}


def test_an_integer_too_long_to_write_becomes_null_not_an_error() -> None:
    assert _strict(dumps({"n": 10**5000, "ok": 1})) == {"n": None, "ok": 1}


def test_a_handlers_nan_output_reaches_a_json_client_as_null() -> None:
    response = pb.ModelInferResponse()
    response.outputs.add(name="y", datatype="FP64", shape=[3]).contents.fp64_contents.extend([math.nan, math.inf, 2.0])
    assert _strict(dumps(response_to_json(response)))["outputs"][0]["data"] == [None, None, 2.0]


def test_openai_bodies_are_valid_json_whatever_the_floats() -> None:
    import struct

    row = struct.pack("<3f", math.nan, math.inf, 0.5)
    assert _strict(dumps(embeddings("m", [row], 1, "float")))["data"][0]["embedding"] == [None, None, 0.5]
    delta = Delta("hi", "stop", None, [{"token": "hi", "logprob": -math.inf}])
    event = sse(chat_completion("id", 0, "m", delta))
    assert _strict(event.removeprefix(b"data: ").strip())["choices"][0]["logprobs"]["content"][0]["logprob"] is None
