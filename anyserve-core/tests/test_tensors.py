"""The tensor codec gives back exactly what it was given, over typed and raw contents."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from typing import Any

import pytest

from anyserve import InferOutputTensor, ModelInferRequest, ModelInferResponse, ObjRef
from anyserve.errors import InvalidRequest
from anyserve.objects import OBJREF_PARAMETER
from anyserve.tensors import (
    DATATYPES,
    TensorError,
    decode_inputs,
    decode_outputs,
    decode_parameters,
    decode_tensor,
    encode_inputs,
    encode_value,
    set_parameters,
)


def round_trip(inputs: dict[str, Any], *, raw: bool | None = None, as_numpy: bool = False) -> dict[str, Any]:
    """Encode into a request, send it over the wire (serialise/parse), decode."""
    request = ModelInferRequest()
    encode_inputs(request, inputs, raw=raw)
    wire = ModelInferRequest.FromString(request.SerializeToString())
    return decode_inputs(wire, as_numpy=as_numpy)


PYTHON_VALUES = [
    pytest.param("hi", "BYTES", ["hi"], id="str"),
    pytest.param("", "BYTES", [""], id="empty-str"),
    pytest.param("héllo ✓", "BYTES", ["héllo ✓"], id="unicode-str"),
    pytest.param(b"\x00\xffbin", "BYTES", [b"\x00\xffbin"], id="bytes"),
    pytest.param(bytearray(b"ba"), "BYTES", [b"ba"], id="bytearray"),
    pytest.param(True, "BOOL", [True], id="bool"),
    pytest.param(7, "INT64", [7], id="int"),
    pytest.param(-(2**63), "INT64", [-(2**63)], id="int64-min"),
    pytest.param(2**63 - 1, "INT64", [2**63 - 1], id="int64-max"),
    pytest.param(1.5, "FP64", [1.5], id="float"),
    pytest.param(1e-300, "FP64", [1e-300], id="tiny-float"),
    pytest.param(ObjRef("fs", "ab/cd"), "BYTES", [ObjRef("fs", "ab/cd")], id="objref"),
    pytest.param([[1, 2, 3], [4, 5, 6]], "INT64", [[1, 2, 3], [4, 5, 6]], id="nested-int"),
    pytest.param((1, 2), "INT64", [1, 2], id="tuple"),
    pytest.param([[[False]], [[True]]], "BOOL", [[[False]], [[True]]], id="3d-bool"),
    pytest.param(["a", "b"], "BYTES", ["a", "b"], id="str-list"),
    pytest.param([[b"a"], [b""]], "BYTES", [[b"a"], [b""]], id="bytes-2d"),
    pytest.param([1, 2.5], "FP64", [1.0, 2.5], id="int-float-promotes"),
    pytest.param([ObjRef("mem", "k1"), ObjRef("mem", "k2")], "BYTES", [ObjRef("mem", "k1"), ObjRef("mem", "k2")]),
    pytest.param([], "FP64", [], id="empty"),
    pytest.param([[], []], "FP64", [[], []], id="empty-2d"),
]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize(("value", "datatype", "expected"), PYTHON_VALUES)
def test_python_values_round_trip(value: Any, datatype: str, expected: Any, raw: bool) -> None:
    assert encode_value(value).datatype == datatype
    decoded = round_trip({"x": value}, raw=raw)["x"]
    assert decoded == expected
    assert _types(decoded) == _types(expected)  # str stays str, bytes stays bytes, bool stays bool


def _types(value: Any) -> Any:
    return [_types(v) for v in value] if isinstance(value, list) else type(value)


def test_a_scalar_becomes_shape_one_and_nesting_gives_the_shape() -> None:
    assert encode_value(3).shape == [1]
    assert encode_value("x").shape == [1]
    assert encode_value([[1, 2, 3], [4, 5, 6]]).shape == [2, 3]
    assert encode_value([[], []]).shape == [2, 0]


def test_str_and_bytes_stay_apart() -> None:
    out = round_trip({"s": "x", "b": b"x"})
    assert out == {"s": ["x"], "b": [b"x"]}
    assert type(out["s"][0]) is str and type(out["b"][0]) is bytes


def test_special_floats_survive() -> None:
    out = round_trip({"f": [math.inf, -math.inf, math.nan, -0.0]})["f"]
    assert out[:2] == [math.inf, -math.inf] and math.isnan(out[2]) and math.copysign(1, out[3]) == -1


def test_tensor_parameters_mark_str_and_objref() -> None:
    request = ModelInferRequest()
    encode_inputs(request, {"s": "a", "o": ObjRef("fs", "k"), "b": b"a"})
    s, o, b = request.inputs
    assert s.parameters["content_type"].string_param == "str"
    assert o.parameters[OBJREF_PARAMETER].bool_param is True
    assert list(o.contents.bytes_contents) == [b"fs://k"]
    assert dict(b.parameters) == {}


def test_objref_in_a_string_parameter_with_empty_contents_decodes() -> None:
    """The shared-memory shape: the reference rides in the parameter, contents stay empty."""
    tensor = InferOutputTensor(name="o", datatype="BYTES", shape=[1])
    tensor.parameters[OBJREF_PARAMETER].string_param = "fs://big/blob"
    assert decode_tensor(tensor) == [ObjRef("fs", "big/blob")]


def test_a_request_is_all_typed_or_all_raw() -> None:
    request = ModelInferRequest()
    encode_inputs(request, {"a": [1, 2], "s": "x"}, raw=True)
    assert [t.HasField("contents") for t in request.inputs] == [False, False]
    assert request.raw_input_contents == [struct.pack("<2q", 1, 2), struct.pack("<I", 1) + b"x"]
    typed = ModelInferRequest()
    encode_inputs(typed, {"a": [1, 2]})
    assert list(typed.inputs[0].contents.int64_contents) == [1, 2] and not typed.raw_input_contents


# -- decoding every datatype as a server would send it -------------------------

DATATYPE_SAMPLES = {
    "BOOL": [True, False, True],
    "INT8": [-128, 0, 127],
    "INT16": [-(2**15), 1, 2**15 - 1],
    "INT32": [-(2**31), 2, 2**31 - 1],
    "INT64": [-(2**63), 3, 2**63 - 1],
    "UINT8": [0, 1, 255],
    "UINT16": [0, 2, 2**16 - 1],
    "UINT32": [0, 3, 2**32 - 1],
    "UINT64": [0, 4, 2**64 - 1],
    "FP16": [0.5, -2.0, 65504.0],
    "BF16": [0.5, -2.0, 2.0**100],
    "FP32": [0.5, -2.25, 2.0**100],
    "FP64": [0.1, -2.5, 1.0e308],
    "BYTES": [b"a", b"", b"\x00\x01"],
}
RAW_FORMATS = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
               "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f", "FP64": "d"}  # fmt: skip


def test_samples_cover_every_datatype() -> None:
    assert set(DATATYPE_SAMPLES) == set(DATATYPES)


def _response(datatype: str, raw: bool) -> ModelInferResponse:
    values = DATATYPE_SAMPLES[datatype]
    response = ModelInferResponse()
    out = response.outputs.add(name="y", datatype=datatype, shape=[3, 1])
    if raw:
        if datatype == "BYTES":
            response.raw_output_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in values))
        elif datatype == "BF16":  # the upper halves of float32s
            response.raw_output_contents.append(b"".join(struct.pack("<f", v)[2:] for v in values))
        else:
            response.raw_output_contents.append(struct.pack(f"<3{RAW_FORMATS[datatype]}", *values))
    else:
        getattr(out.contents, DATATYPES[datatype].field).extend(values)
    return ModelInferResponse.FromString(response.SerializeToString())


# FP16 and BF16 have no typed contents field: they exist only as raw contents.
ENCODINGS = [
    pytest.param(datatype, raw, id=f"{datatype}-{'raw' if raw else 'typed'}")
    for datatype in DATATYPE_SAMPLES
    for raw in (False, True)
    if raw or datatype not in ("FP16", "BF16")
]


@pytest.mark.parametrize(("datatype", "raw"), ENCODINGS)
def test_every_datatype_decodes(datatype: str, raw: bool) -> None:
    assert decode_outputs(_response(datatype, raw)) == {"y": [[v] for v in DATATYPE_SAMPLES[datatype]]}


@pytest.mark.parametrize(("datatype", "raw"), ENCODINGS)
def test_every_datatype_decodes_to_numpy(datatype: str, raw: bool) -> None:
    np = pytest.importorskip("numpy")
    array = decode_outputs(_response(datatype, raw), as_numpy=True)["y"]
    assert array.shape == (3, 1)
    expected_dtype = np.dtype(object) if datatype == "BYTES" else np.dtype(DATATYPES[datatype].numpy)
    assert array.dtype == expected_dtype
    assert array.ravel().tolist() == DATATYPE_SAMPLES[datatype]


def test_scalar_shape_decodes_to_the_element() -> None:
    tensor = InferOutputTensor(name="s", datatype="INT64", shape=[])
    tensor.contents.int64_contents.append(5)
    assert decode_tensor(tensor) == 5


def test_raw_and_typed_outputs_mixed_as_an_echo_does() -> None:
    """Raw entries follow output order; outputs past the raw list use typed contents."""
    response = ModelInferResponse()
    response.outputs.add(name="echoed", datatype="INT32", shape=[2])
    response.raw_output_contents.append(struct.pack("<2i", 4, 5))
    extra = response.outputs.add(name="pid", datatype="INT64", shape=[1])
    extra.contents.int64_contents.append(42)
    assert decode_outputs(response) == {"echoed": [4, 5], "pid": [42]}


# -- numpy ---------------------------------------------------------------------

NUMPY_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float16", "float32", "float64"]  # fmt: skip


@pytest.mark.parametrize("raw", [None, True], ids=["auto", "raw"])
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_arrays_round_trip_with_dtype_and_shape(dtype: str, raw: bool | None) -> None:
    np = pytest.importorskip("numpy")
    array = (np.arange(6) % 2 == 0) if dtype == "bool" else np.arange(6).astype(dtype)
    array = array.reshape(2, 3)
    if dtype.startswith("uint"):
        array[1, 2] = np.iinfo(dtype).max
    elif dtype.startswith("int"):
        array[1, 2] = np.iinfo(dtype).min
    tensor = encode_value(array)
    assert tensor.shape == [2, 3]
    out = round_trip({"a": array}, raw=raw, as_numpy=True)["a"]
    assert out.dtype == array.dtype and out.shape == (2, 3)
    np.testing.assert_array_equal(out, array)
    assert round_trip({"a": array}, raw=raw)["a"] == array.tolist()


def test_numpy_dtypes_map_to_kserve_datatypes() -> None:
    np = pytest.importorskip("numpy")
    expected = {"bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
                "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
                "float16": "FP16", "float32": "FP32", "float64": "FP64"}  # fmt: skip
    assert {d: encode_value(np.zeros(1, dtype=d)).datatype for d in expected} == expected


def test_numpy_text_and_object_arrays() -> None:
    np = pytest.importorskip("numpy")
    out = round_trip({
        "u": np.array([["a", "bé"], ["c", ""]]),
        "s": np.array([b"x", b"yz"]),
        "o": np.array([b"\x00", b"q"], dtype=object),
        "os": np.array(["p", "q"], dtype=object),
    })  # fmt: skip
    assert out == {"u": [["a", "bé"], ["c", ""]], "s": [b"x", b"yz"], "o": [b"\x00", b"q"], "os": ["p", "q"]}
    back = round_trip({"u": np.array(["a", "b"])}, as_numpy=True)["u"]
    assert back.dtype == object and back.tolist() == ["a", "b"]


def test_numpy_scalars_become_shape_one() -> None:
    np = pytest.importorskip("numpy")
    tensor = encode_value(np.float32(2.5))
    assert (tensor.datatype, tensor.shape) == ("FP32", [1])
    assert round_trip({"x": np.float32(2.5)}) == {"x": [2.5]}


def test_float16_forces_raw_contents() -> None:
    np = pytest.importorskip("numpy")
    request = ModelInferRequest()
    encode_inputs(request, {"h": np.array([1.5], dtype=np.float16), "i": [1]})
    assert len(request.raw_input_contents) == 2  # every input goes raw with it
    with pytest.raises(TensorError, match="FP16"):
        encode_inputs(ModelInferRequest(), {"h": np.zeros(1, dtype=np.float16)}, raw=False)


def test_numpy_is_not_imported_unless_asked() -> None:
    code = (
        "import sys, anyserve.tensors as t, anyserve\n"
        "r = anyserve.ModelInferRequest(); t.encode_inputs(r, {'a': [1, 2], 's': 'x'}, raw=True)\n"
        "assert t.decode_inputs(r) == {'a': [1, 2], 's': ['x']}\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2], [3]], "ragged"),
        ([1, [2]], "ragged"),
        ([[1], 2], "ragged"),
        (["a", b"b"], "mixes"),
        ([True, 1], "mixes"),
        (2**63, "INT64 range"),
        ([0, -(2**63) - 1], "INT64 range"),
        (None, "NoneType"),
        ({"a": 1}, "dict"),
        (object(), "object"),
    ],
)
def test_values_that_are_not_tensors_are_clear_errors(value: Any, message: str) -> None:
    with pytest.raises(TensorError, match=message) as info:
        encode_inputs(ModelInferRequest(), {"bad": value})
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidRequest)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "'bad'" in str(info.value)  # the message names the input


def test_unsupported_numpy_dtype_is_an_error() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(TensorError, match="complex"):
        encode_value(np.zeros(2, dtype=np.complex64))


def _bad(datatype: str, shape: list[int], **fields: Any) -> InferOutputTensor:
    tensor = InferOutputTensor(name="t", datatype=datatype, shape=shape)
    for field, values in fields.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


@pytest.mark.parametrize(
    ("tensor", "raw", "message"),
    [
        (_bad("INT64", [3], int64_contents=[1, 2]), None, "2 elements, but shape"),
        (_bad("FP32", [2]), b"\x00" * 7, "7 bytes"),
        (_bad("BYTES", [1]), b"\x05\x00\x00\x00ab", "overruns"),
        (_bad("BYTES", [1]), b"\x05\x00", "length prefix"),
        (_bad("FP16", [1]), None, "needs raw contents"),
        (_bad("COMPLEX", [1]), None, "unknown tensor datatype"),
        (_bad("INT8", [-1]), None, "negative"),
    ],
)
def test_malformed_tensors_are_clear_errors(tensor: InferOutputTensor, raw: bytes | None, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        decode_tensor(tensor, raw)


def test_str_content_type_with_bad_utf8_is_an_error() -> None:
    tensor = _bad("BYTES", [1], bytes_contents=[b"\xff"])
    tensor.parameters["content_type"].string_param = "str"
    with pytest.raises(TensorError, match="UTF-8"):
        decode_tensor(tensor)


# -- parameters ------------------------------------------------------------------------


def test_parameters_keep_their_python_types() -> None:
    request = ModelInferRequest()
    values = {"flag": True, "n": -3, "big": 2**64 - 1, "x": 0.25, "s": "text"}
    set_parameters(request.parameters, values)
    assert request.parameters["big"].WhichOneof("parameter_choice") == "uint64_param"
    decoded = decode_parameters(ModelInferRequest.FromString(request.SerializeToString()).parameters)
    assert decoded == values and type(decoded["flag"]) is bool
    with pytest.raises(TensorError, match="list"):
        set_parameters(request.parameters, {"bad": [1]})
    with pytest.raises(TensorError, match="does not fit"):
        set_parameters(request.parameters, {"huge": 2**64})
