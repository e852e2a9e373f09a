"""A handler's plain outputs -> a ``ModelInferResponse`` the client reads: datatypes, declared types, raw answers."""

from __future__ import annotations

import struct

import pytest

from anyserve import AnyServe
from anyserve.protocol import messages as pb
from anyserve.tensors import TensorError, TensorSpec, as_raw_outputs, decode_outputs, encode_outputs


def _typed(response: pb.ModelInferResponse) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (t.datatype, list(t.shape)) for t in response.outputs}


def test_plain_values_get_the_datatype_that_decodes_back_to_them():
    response = encode_outputs({"n": [1, 2], "x": 0.5, "text": "hi", "blob": b"\x00", "ok": [True]})
    assert _typed(response) == {
        "n": ("INT64", [2]),
        "x": ("FP64", [1]),
        "text": ("BYTES", [1]),
        "blob": ("BYTES", [1]),
        "ok": ("BOOL", [1]),
    }
    assert decode_outputs(response) == {"n": [1, 2], "x": [0.5], "text": ["hi"], "blob": [b"\x00"], "ok": [True]}
    assert not response.raw_output_contents  # a typed request gets typed contents, which every client reads


def test_numpy_arrays_keep_their_dtype_and_shape():
    np = pytest.importorskip("numpy")
    response = encode_outputs({"m": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert _typed(response) == {"m": ("FP32", [2, 3])}
    assert decode_outputs(response, as_numpy=True)["m"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_declared_outputs_set_the_datatype():
    declared = [TensorSpec("n", "INT32"), TensorSpec("x", "FP32"), TensorSpec("flag", "BOOL")]
    response = encode_outputs({"n": [1, 2], "x": [1, 2], "flag": [True]}, declared=declared)
    assert _typed(response) == {"n": ("INT32", [2]), "x": ("FP32", [2]), "flag": ("BOOL", [1])}
    assert decode_outputs(response) == {"n": [1, 2], "x": [1.0, 2.0], "flag": [True]}
    with pytest.raises(TensorError, match=r"out of range for INT8 \(-128..127\)"):
        encode_outputs({"n": [300]}, declared=[TensorSpec("n", "INT8")])
    with pytest.raises(TensorError, match="declared INT32 but holds non-integer values"):
        encode_outputs({"n": [1.5]}, declared=[TensorSpec("n", "INT32")])
    with pytest.raises(TensorError, match="declared FP32 but the handler returned BYTES"):
        encode_outputs({"x": "text"}, declared=[TensorSpec("x", "FP32")])


def test_a_raw_request_gets_raw_contents_back():
    request = pb.ModelInferRequest()
    request.raw_input_contents.append(b"\x00" * 8)
    response = encode_outputs({"n": [7], "s": "ok"}, request=request)
    assert list(response.raw_output_contents) == [struct.pack("<q", 7), struct.pack("<I", 2) + b"ok"]
    assert not response.outputs[0].contents.int64_contents
    assert decode_outputs(response) == {"n": [7], "s": ["ok"]}


def test_a_hand_built_typed_response_turns_raw_in_place():
    response = pb.ModelInferResponse()
    response.outputs.add(name="n", datatype="INT64", shape=[2]).contents.int64_contents.extend([1, -1])
    response.outputs.add(name="b", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"xy")
    as_raw_outputs(response)
    assert list(response.raw_output_contents) == [struct.pack("<2q", 1, -1), struct.pack("<I", 2) + b"xy"]
    assert decode_outputs(response) == {"n": [1, -1], "b": [b"xy"]}
    unknown = pb.ModelInferResponse()
    unknown.outputs.add(name="z", datatype="CUSTOM", shape=[1]).contents.int64_contents.append(1)
    as_raw_outputs(unknown)  # a datatype anyserve does not know is left as the handler wrote it
    assert not unknown.raw_output_contents


def test_tensor_specs_accept_tuples_and_dicts_and_refuse_mistakes():
    app = AnyServe()

    @app.capability(type="t", inputs=[("a", "INT64", [-1, 2]), {"name": "b", "datatype": "BYTES"}], outputs=[])
    def handler(request):
        return {}

    assert app.handlers[0].tensors()["inputs"] == [
        {"name": "a", "datatype": "INT64", "shape": [-1, 2]},
        {"name": "b", "datatype": "BYTES", "shape": [-1]},
    ]
    for bad, message in (
        ([("a", "INT65")], "datatype 'INT65'"),
        ([("a",)], "a tensor is (name, datatype[, shape])"),
        ([("a", "FP32", ["x"])], "shape must be integers"),
        ([("a", "FP32"), ("a", "FP32")], "tensor names repeat"),
    ):
        with pytest.raises(TypeError) as info:
            app.capability(type="u", inputs=bad)(handler)
        assert message in str(info.value)
