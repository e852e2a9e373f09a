"""A tensor's shape is bounded before anything is built, at every codec: the shape bomb is a clear 400.

``[10000000, 0]`` is 27 bytes of request that used to decode to ten million
empty lists (18 s, 700 MB in a worker). Each test here measures allocation
with ``tracemalloc`` where "refused before building anything" is the point:
a bound on bytes allocated, not on time.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from anyserve.config import ReplicaSettings
from anyserve.errors import InvalidRequest
from anyserve.protocol import messages as pb
from anyserve.protocol import shapes
from anyserve.protocol.binary import join
from anyserve.protocol.messages import parse_request
from anyserve.protocol.shapes import MAX_EMPTY_ROWS, MAX_TENSOR_RANK, tensor_elements
from anyserve.protocol.v2_client import parse_response
from anyserve.protocol.v2_json import parse_infer_json
from anyserve.tensors import TensorError, decode_inputs, decode_tensor, encode_value

BOMB = [10_000_000, 0]


@pytest.fixture
def limit() -> Iterator[Callable[[int], None]]:
    """Set this process's element limit for one test, as a replica does from its settings."""
    yield shapes.set_max_tensor_elements
    shapes.set_max_tensor_elements(shapes.DEFAULT_MAX_TENSOR_ELEMENTS)


def refused_cheaply(call: Callable[[], Any], *fragments: str) -> str:
    """``call`` raises INVALID_ARGUMENT naming ``fragments``, having allocated less than a megabyte."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest) as info:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert info.value.code == "INVALID_ARGUMENT"
    for fragment in fragments:
        assert fragment in message, message
    assert peak < 1 << 20, f"refusing allocated {peak} bytes"
    return message


# -- the bound itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "elements"),
    [
        ([], 1),
        ([3, 4], 12),
        ([0], 0),
        ([0, 384], 0),  # an empty batch: one empty list
        ([2, 0, 3], 0),
        ([MAX_EMPTY_ROWS, 0], 0),
        ([1] * MAX_TENSOR_RANK, 1),
    ],
)
def test_shapes_within_the_bounds_give_their_element_count(shape: list[int], elements: int) -> None:
    assert tensor_elements(shape, "input 'x'") == elements


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        (BOMB, "describes 10,000,000 empty rows"),
        ([1000, 1000, 0], "1,000,000 empty rows"),
        ([MAX_EMPTY_ROWS + 1, 0], "at most 65,536"),
        ([2**40, 2**40], "zero dimensions counted as one"),
        ([0, 2**62, 2**62], "replica.max_tensor_elements"),  # a leading zero hides nothing
        ([2**63 - 1], "more than"),
        ([3, -1], "negative dimension"),
        ([1] * (MAX_TENSOR_RANK + 1), f"at most {MAX_TENSOR_RANK} are accepted"),
    ],
)
def test_shapes_past_the_bounds_are_refused_naming_the_tensor(shape: list[int], fragment: str) -> None:
    with pytest.raises(TensorError, match="input 'x'") as info:
        tensor_elements(shape, "input 'x'")
    assert fragment in str(info.value)


def test_the_limit_is_the_setting_and_its_default_matches_the_message_limit(limit) -> None:
    assert ReplicaSettings().max_tensor_elements == shapes.DEFAULT_MAX_TENSOR_ELEMENTS
    assert ReplicaSettings().max_tensor_elements == ReplicaSettings().max_message_bytes
    limit(100)
    assert tensor_elements([10, 10], "t") == 100
    with pytest.raises(TensorError, match="at most 100 are accepted"):
        tensor_elements([101], "t")
    with pytest.raises(ValueError, match="positive integer"):
        shapes.set_max_tensor_elements(0)


# -- every codec asks it first ----------------------------------------------------------------


def _bomb_request(raw: bool = False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add")
    request.inputs.add(name="a", datatype="INT64", shape=BOMB)
    if raw:
        request.raw_input_contents.append(b"")
    return request


def test_a_protobuf_request_is_refused_where_it_is_parsed() -> None:
    payload = _bomb_request().SerializeToString()
    assert len(payload) < 32  # the attacker's whole cost
    refused_cheaply(lambda: parse_request(payload), "input 'a'", "10,000,000 empty rows")


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_the_tensor_codec_refuses_before_building_lists(raw: bool, as_numpy: bool) -> None:
    request = _bomb_request(raw)  # built, not parsed: a handler may decode a message it made itself
    refused_cheaply(lambda: decode_inputs(request, as_numpy=as_numpy), "tensor 'a'", "empty rows")


def test_a_response_with_a_bomb_shape_is_refused_by_the_client() -> None:
    tensor = pb.InferOutputTensor(name="y", datatype="FP32", shape=BOMB)
    refused_cheaply(lambda: decode_tensor(tensor), "tensor 'y'")


def test_kserve_json_and_the_binary_extension_refuse_it() -> None:
    body = {"inputs": [{"name": "a", "datatype": "INT64", "shape": BOMB, "data": []}]}
    refused_cheaply(lambda: parse_infer_json(json.dumps(body).encode()), "input 'a'", "empty rows")
    header = {"inputs": [{"name": "a", "datatype": "FP32", "shape": BOMB, "parameters": {"binary_data_size": 0}}]}
    binary, headers = join(json.dumps(header).encode(), [b""])
    refused_cheaply(
        lambda: parse_infer_json(binary, header_length=int(headers["Inference-Header-Content-Length"])), "empty rows"
    )
    response = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [2**62, 4], "data": []}]}
    refused_cheaply(lambda: parse_response(json.dumps(response).encode()), "output 'y'", "more than")


def test_json_shapes_that_protobuf_cannot_hold_are_a_400_not_a_crash() -> None:
    # 2**64 - 1 fits no int64 shape field: it used to raise protobuf's ValueError (a 500)
    body = {"inputs": [{"name": "a", "datatype": "INT8", "shape": [2**64 - 1], "data": []}]}
    refused_cheaply(lambda: parse_infer_json(json.dumps(body).encode()), "input 'a'", "more than")
    deep = {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1] * 40, "data": [1]}]}
    refused_cheaply(lambda: parse_infer_json(json.dumps(deep).encode()), "40 dimensions")


def test_json_data_nested_deeper_than_any_shape_is_refused() -> None:
    data: Any = [1]
    for _ in range(MAX_TENSOR_RANK + 5):
        data = [data]
    body = {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": data}]}
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_TENSOR_RANK} levels"):
        parse_infer_json(json.dumps(body).encode())


def test_encoding_refuses_what_decoding_would(limit) -> None:
    data: Any = 1
    for _ in range(MAX_TENSOR_RANK + 1):
        data = [data]
    with pytest.raises(TensorError, match="input 'deep'"):
        encode_value(data, "deep")
    limit(10)
    with pytest.raises(TensorError, match=r"input 'wide'.*at most 10"):
        encode_value(list(range(11)), "wide")


# -- what still decodes, decodes as before -------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ([2, 0], [[], []]),
        ([0, 3], []),
        ([2, 0, 3], [[], []]),
        ([1, 2, 0], [[[], []]]),
    ],
)
def test_empty_tensors_keep_their_rows(shape: list[int], expected: list[Any]) -> None:
    assert decode_tensor(pb.InferInputTensor(name="e", datatype="INT64", shape=shape)) == expected


def test_nesting_is_row_major() -> None:
    tensor = pb.InferInputTensor(name="n", datatype="INT32", shape=[2, 3, 2])
    raw = struct.pack("<12i", *range(12))
    assert decode_tensor(tensor, raw) == [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]
