"""KServe v2 REST bodies (JSON, binary extension) <-> protobuf, both ways, and the message for every bad input."""

from __future__ import annotations

import json
import struct

import pytest

from anyserve.errors import InvalidRequest
from anyserve.protocol import BinaryWanted, join, parse_header_length, parse_response, request_body
from anyserve.protocol import messages as pb
from anyserve.protocol.v2_json import parse_infer_json, response_to_json, set_parameter


def parse(body: dict | str | bytes, **kwargs) -> pb.ModelInferRequest:
    raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    return parse_infer_json(raw, **kwargs)


def tensor(name="x", datatype="INT64", shape=(2,), data=(1, 2), **extra) -> dict:
    shape = list(shape) if isinstance(shape, tuple) else shape
    data = list(data) if isinstance(data, tuple) else data
    return {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}


def bad(body, *fragments: str) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse(body)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.code == "INVALID_ARGUMENT"
    return message


# -- requests ---------------------------------------------------------------------


def test_flat_and_nested_data_give_the_same_row_major_contents():
    flat = parse({"inputs": [tensor(shape=(2, 3), data=[1, 2, 3, 4, 5, 6])]})
    nested = parse({"inputs": [tensor(shape=(2, 3), data=[[1, 2, 3], [4, 5, 6]])]})
    assert flat == nested
    assert list(flat.inputs[0].contents.int64_contents) == [1, 2, 3, 4, 5, 6]
    assert list(flat.inputs[0].shape) == [2, 3]


def test_every_contents_datatype_lands_in_its_field():
    cases = {
        "BOOL": ([True, False], "bool_contents"),
        "INT8": ([-128, 127], "int_contents"),
        "INT32": ([-(2**31), 2**31 - 1], "int_contents"),
        "INT64": ([-(2**63), 2**63 - 1], "int64_contents"),
        "UINT8": ([0, 255], "uint_contents"),
        "UINT64": ([0, 2**64 - 1], "uint64_contents"),
        "FP32": ([1.5, 2], "fp32_contents"),
        "FP64": ([0.1, -3], "fp64_contents"),
    }
    inputs = [tensor(name=dt, datatype=dt, data=data) for dt, (data, _) in cases.items()]
    request = parse({"inputs": inputs})
    assert not request.raw_input_contents
    for got, (dt, (data, field)) in zip(request.inputs, cases.items(), strict=True):
        assert got.datatype == dt
        assert list(getattr(got.contents, field)) == pytest.approx(data)


def test_request_fields_parameters_and_requested_outputs():
    request = parse(
        {
            "id": "req-1",
            "parameters": {"temperature": 0.5, "max_tokens": 8, "stream": False, "user": "ann"},
            "inputs": [tensor(parameters={"note": "x"})],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
        },
        model_name="chat",
        model_version="v1",
    )
    assert (request.id, request.model_name, request.model_version) == ("req-1", "chat", "v1")
    params = request.parameters
    assert params["temperature"].double_param == 0.5
    assert params["max_tokens"].int64_param == 8
    assert params["stream"].bool_param is False
    assert params["user"].string_param == "ann"
    assert request.inputs[0].parameters["note"].string_param == "x"
    assert request.outputs[0].name == "y" and request.outputs[0].parameters["binary_data"].bool_param is False


def test_bytes_are_utf8_strings_or_base64_when_marked():
    request = parse(
        {
            "inputs": [
                tensor("text", "BYTES", (2,), ["héllo", ""]),
                tensor("blob", "BYTES", (1,), ["AP8="], parameters={"content_encoding": "base64"}),
            ]
        }
    )
    assert list(request.inputs[0].contents.bytes_contents) == ["héllo".encode(), b""]
    assert list(request.inputs[1].contents.bytes_contents) == [b"\x00\xff"]


def test_fp16_sends_every_input_raw():
    request = parse({"inputs": [tensor("h", "FP16", (2,), [1.5, -2]), tensor("s", "BYTES", (1,), ["ab"])]})
    assert [t.HasField("contents") for t in request.inputs] == [False, False]
    assert struct.unpack("<2e", request.raw_input_contents[0]) == (1.5, -2.0)
    assert request.raw_input_contents[1] == struct.pack("<I", 2) + b"ab"


def test_empty_body_parts_are_allowed():
    assert parse({}).inputs == []
    assert list(parse({"inputs": [tensor(shape=(0,), data=[])]}).inputs[0].shape) == [0]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("{not json", ("not valid JSON", "line 1")),
        ("[1, 2]", ("must be a JSON object", "list")),
        (b"\xff\xfe", ("not", "JSON")),
        ({"inputs": {"x": 1}}, ("'inputs' must be a list",)),
        ({"id": 5}, ("'id' must be a string",)),
        ({"inputs": [5]}, ("inputs[0] must be an object",)),
        ({"inputs": [{"datatype": "INT64", "shape": [1], "data": [1]}]}, ("inputs[0]", "'name'")),
        ({"inputs": [tensor(datatype="INT65")]}, ("input 'x'", "'INT65'", "not a KServe v2 datatype", "FP32")),
        ({"inputs": [tensor(shape=(2, 2))]}, ("input 'x'", "shape [2, 2] holds 4 elements but data has 2")),
        ({"inputs": [tensor(shape=(-1,))]}, ("input 'x'", "non-negative integers")),
        ({"inputs": [tensor(shape="2")]}, ("input 'x'", "shape")),
        ({"inputs": [tensor(data=[1, "2"])]}, ("input 'x'", 'data[1] = "2" (str)', "INT64")),
        ({"inputs": [tensor(data=[1, 2.5])]}, ("input 'x'", "data[1] = 2.5", "an integer")),
        ({"inputs": [tensor(data=[True, 1])]}, ("input 'x'", "data[0] = true (bool)")),
        ({"inputs": [tensor(datatype="INT8", data=[1, 300])]}, ("input 'x'", "300", "out of range for INT8")),
        ({"inputs": [tensor(datatype="UINT32", data=[-1, 0])]}, ("input 'x'", "-1", "UINT32")),
        ({"inputs": [tensor(datatype="BOOL", data=[1, 0])]}, ("input 'x'", "a boolean")),
        ({"inputs": [tensor(datatype="FP32", data=["1", 2])]}, ("input 'x'", "a number")),
        ({"inputs": [tensor(datatype="BYTES", data=["a", 1])]}, ("input 'x'", "a string")),
        (
            {"inputs": [tensor(datatype="BYTES", shape=(1,), data=["%%"], parameters={"content_encoding": "base64"})]},
            ("input 'x'", "base64"),
        ),
        ({"inputs": [tensor(data=None)]}, ("input 'x'", "data must be a list")),
        ({"inputs": [tensor(), tensor()]}, ("input 'x' is given twice",)),
        ({"inputs": [tensor(parameters=[1])]}, ("input 'x': parameters must be an object",)),
        ({"parameters": {"a": [1]}}, ("parameters.a", "string, number or boolean")),
        ({"outputs": [{"nom": "y"}]}, ("outputs[0]", "'name'")),
    ],
)
def test_bad_requests_name_what_is_wrong(body, fragments):
    bad(body, *fragments)


def test_numbers_beyond_64_bits_are_doubles_in_json_and_refused_as_python_ints():
    # JSON numbers are doubles to most readers; beyond 64 bits, the codec's reader says so too.
    assert parse({"parameters": {"a": 2**70}}).parameters["a"].double_param == float(2**70)
    bad({"inputs": [tensor(datatype="UINT64", data=[0, 2**64])]}, "input 'x'", "data[1]", "an integer")
    with pytest.raises(InvalidRequest, match="does not fit in 64 bits"):
        set_parameter(pb.InferParameter(), 2**70, "parameters.a")


def test_deeply_nested_json_is_a_clear_error():
    bad("[" * 100_000 + "]" * 100_000, "nested too deeply")


# -- responses --------------------------------------------------------------------


def test_response_contents_become_kserve_json():
    response = pb.ModelInferResponse(model_name="m", model_version="2", id="r")
    response.parameters["served_by"].string_param = "a"
    response.parameters["n"].int64_param = 3
    ints = response.outputs.add(name="ints", datatype="INT32", shape=[2, 1])
    ints.contents.int_contents.extend([4, 5])
    ints.parameters["unit"].string_param = "tokens"
    response.outputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append("ü".encode())
    assert response_to_json(response) == {
        "model_name": "m",
        "model_version": "2",
        "id": "r",
        "parameters": {"served_by": "a", "n": 3},
        "outputs": [
            {"name": "ints", "datatype": "INT32", "shape": [2, 1], "parameters": {"unit": "tokens"}, "data": [4, 5]},
            {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {}, "data": ["ü"]},
        ],
    }


def test_non_utf8_bytes_come_back_base64_and_marked():
    response = pb.ModelInferResponse()
    response.outputs.add(name="blob", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"\xff", b"ok"])
    (out,) = response_to_json(response)["outputs"]
    assert out["data"] == ["/w==", "b2s="]
    assert out["parameters"] == {"content_encoding": "base64"}


def test_raw_output_contents_are_decoded():
    response = pb.ModelInferResponse()
    response.outputs.add(name="f", datatype="FP32", shape=[2])
    response.outputs.add(name="s", datatype="BYTES", shape=[2])
    response.outputs.add(name="b", datatype="BF16", shape=[1])
    response.raw_output_contents.extend(
        [struct.pack("<2f", 1.5, -1), struct.pack("<I", 1) + b"a" + struct.pack("<I", 0), struct.pack("<H", 0x3FC0)]
    )
    outputs = response_to_json(response)["outputs"]
    assert [o["data"] for o in outputs] == [[1.5, -1.0], ["a", ""], [1.5]]


def test_round_trip_through_the_replica_shape():
    request = parse({"inputs": [tensor("x", "FP64", (2, 2), [[1, 2], [3, 4.5]]), tensor("t", "BYTES", (1,), ["hi"])]})
    response = pb.ModelInferResponse()
    for t in request.inputs:
        response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape).contents.CopyFrom(t.contents)
    outputs = response_to_json(response)["outputs"]
    assert outputs[0]["data"] == [1.0, 2.0, 3.0, 4.5] and outputs[0]["shape"] == [2, 2]
    assert outputs[1]["data"] == ["hi"]


def test_bytes_marked_base64_by_the_replica_stay_base64():
    response = pb.ModelInferResponse()
    out = response.outputs.add(name="blob", datatype="BYTES", shape=[1])
    out.contents.bytes_contents.append(b"abc")
    out.parameters["content_encoding"].string_param = "base64"
    assert response_to_json(response)["outputs"][0]["data"] == ["YWJj"]


# -- the client's half, and both halves together -------------------------------------


def _mixed_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(id="r1")
    request.parameters["tag"].string_param = "x"
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"hi", "wö".encode()])
    request.inputs.add(name="x", datatype="FP32", shape=[2, 1]).contents.fp32_contents.extend([0.5, -2.0])
    request.inputs.add(name="n", datatype="INT64", shape=[1]).contents.int64_contents.append(-(2**40))
    return request


@pytest.mark.parametrize("binary", [False, True])
def test_a_request_written_as_a_client_writes_it_reads_back_the_same(binary):
    sent = _mixed_request()
    body, headers = request_body(sent, binary=binary)
    got = parse_infer_json(body, header_length=parse_header_length(headers.get("Inference-Header-Content-Length")))
    assert got.id == "r1" and got.parameters["tag"].string_param == "x"
    assert [(t.name, t.datatype, list(t.shape)) for t in got.inputs] == [
        (t.name, t.datatype, list(t.shape)) for t in sent.inputs
    ]
    if binary:  # binary data arrives raw, as KServe's raw contents
        assert got.raw_input_contents[1] == struct.pack("<2f", 0.5, -2.0)
        assert got.raw_input_contents[2] == struct.pack("<q", -(2**40))
        assert got.raw_input_contents[0] == struct.pack("<I", 2) + b"hi" + struct.pack("<I", 3) + "wö".encode()
    else:
        assert list(got.inputs[0].contents.bytes_contents) == [b"hi", "wö".encode()]
        assert list(got.inputs[1].contents.fp32_contents) == [0.5, -2.0]


def test_a_response_written_binary_reads_back_as_raw_outputs():
    response = pb.ModelInferResponse(model_name="m", id="r1")
    response.outputs.add(name="n", datatype="INT64", shape=[2]).contents.int64_contents.extend([1, 2])
    response.outputs.add(name="s", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"ok")
    request = pb.ModelInferRequest()
    request.outputs.add(name="n").parameters["binary_data"].bool_param = True
    blobs: list[bytes] = []
    header = response_to_json(response, BinaryWanted.from_request(request), blobs)
    body, headers = join(json.dumps(header).encode(), blobs)
    got = parse_response(body, int(headers["Inference-Header-Content-Length"]))
    assert (got.model_name, got.id) == ("m", "r1")
    # One output came binary, so the message holds every output raw (KServe never mixes the two).
    assert got.raw_output_contents[0] == struct.pack("<2q", 1, 2)
    assert got.raw_output_contents[1] == struct.pack("<I", 2) + b"ok"
    assert parse_response(json.dumps(response_to_json(response)).encode()).outputs[0].contents.int64_contents == [1, 2]


def test_binary_sizes_that_do_not_add_up_are_refused():
    body, headers = request_body(_mixed_request(), binary=True)
    length = int(headers["Inference-Header-Content-Length"])
    with pytest.raises(InvalidRequest, match="no input's binary_data_size claims them"):
        parse_infer_json(body + b"extra", header_length=length)
    with pytest.raises(InvalidRequest, match="binary_data_size is 8 but only 5 bytes of binary data are left"):
        parse_infer_json(body[:-3], header_length=length)
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length is"):
        parse_infer_json(body, header_length=len(body) + 1)
    with pytest.raises(InvalidRequest, match="binary body"):
        parse_infer_json(body[:length])
