"""KServe v2 tensors -> Python values (nested lists, or numpy arrays on request).

Every datatype decodes from typed ``contents`` and from raw contents. BYTES
elements come back as ``str`` when the tensor says ``content_type=str``, as
:class:`~anyserve.objects.ObjRef` when it carries ``anyserve.objref``, and as
``bytes`` otherwise, so what was encoded is what comes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from anyserve.objects import ObjRef
from anyserve.protocol.datatypes import DataType, TensorError, lookup, unpack_bytes, unpack_raw
from anyserve.protocol.messages import InferParameter, ModelInferRequest, ModelInferResponse
from anyserve.protocol.names import CONTENT_TYPE_PARAMETER, OBJREF_PARAMETER, STR_CONTENT_TYPE
from anyserve.protocol.shapes import tensor_elements

#: Anything shaped like a KServe tensor message (input or output tensor).
TensorMessage = ModelInferRequest.InferInputTensor | ModelInferResponse.InferOutputTensor


def _check_raw_size(dt: DataType, raw: bytes, count: int, what: str) -> None:
    if len(raw) != count * dt.itemsize:
        raise TensorError(
            f"{what}: raw contents hold {len(raw)} bytes, shape needs {count} x {dt.itemsize} bytes of {dt.name}"
        )


def _bytes_elements(elements: Sequence[bytes], params: Mapping[str, InferParameter], what: str) -> list[Any]:
    """Give BYTES elements back the Python type they were encoded from."""
    objref = params.get(OBJREF_PARAMETER)
    if objref is not None and objref.string_param and not elements:
        # the reference rides in the parameter, contents left empty (the shared-memory shape)
        return [ObjRef.from_string(objref.string_param)]
    if objref is not None and objref.bool_param:
        return [ObjRef.from_string(e.decode("utf-8")) for e in elements]
    content_type = params.get(CONTENT_TYPE_PARAMETER)
    if content_type is not None and content_type.string_param == STR_CONTENT_TYPE:
        try:
            return [e.decode("utf-8") for e in elements]
        except UnicodeDecodeError as exc:
            raise TensorError(f"{what}: content_type=str but an element is not UTF-8: {exc}") from None
    return list(elements)


def _nest(flat: Sequence[Any], shape: Sequence[int]) -> Any:
    """Row-major flat elements as nested lists; shape [] gives the single element itself.

    Built bottom-up, one list comprehension per dimension: a zero-element
    tensor still gets its empty rows (``[2, 0]`` is ``[[], []]``), and
    :func:`~anyserve.protocol.shapes.tensor_elements` has bounded how many.
    """
    if not shape:
        return flat[0]
    value = list(flat)
    for depth in range(len(shape) - 1, 0, -1):
        size = shape[depth]
        value = [value[i * size : (i + 1) * size] for i in range(math.prod(shape[:depth]))]
    return value


def _to_numpy(dt: DataType, values: Any, shape: list[int]) -> Any:
    import numpy as np  # only callers that ask for arrays pay for numpy

    if isinstance(values, bytes):  # raw numeric contents: no per-element work
        return np.frombuffer(values, dtype=dt.numpy).reshape(shape).copy()
    if dt.name == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.asarray(values, dtype=dt.numpy).reshape(shape)


def decode_tensor(tensor: TensorMessage, raw: bytes | None = None, *, as_numpy: bool = False) -> Any:
    """One tensor's value; ``raw`` is its entry of ``raw_*_contents`` when the message used raw contents."""
    what = f"tensor {tensor.name!r}"
    dt = lookup(tensor.datatype)
    shape = list(tensor.shape)
    count = tensor_elements(shape, what)
    if raw is not None and dt.name == "BYTES":
        values: Sequence[Any] = unpack_bytes(raw, what)
    elif raw is not None:
        _check_raw_size(dt, raw, count, what)
        if as_numpy and dt.name != "BF16":
            return _to_numpy(dt, raw, shape)
        values = unpack_raw(dt, raw, what)
    elif dt.field is None:
        raise TensorError(f"{what}: {dt.name} needs raw contents, but the message has none for it")
    else:
        values = getattr(tensor.contents, dt.field)
    if dt.name == "BYTES":
        values = _bytes_elements(values, tensor.parameters, what)
    if len(values) != count:
        raise TensorError(f"{what}: {len(values)} elements, but shape {shape} needs {count}")
    if as_numpy:
        return _to_numpy(dt, values, shape)
    return _nest(values, shape)


def _decode_all(tensors: Sequence[TensorMessage], raws: Sequence[bytes], as_numpy: bool) -> dict[str, Any]:
    # Raw entries follow the tensors' order. Servers that mix (a raw echo plus a
    # typed extra tensor after it) are read leniently: tensors past the raw
    # list use their typed contents.
    return {
        t.name: decode_tensor(t, raws[i] if i < len(raws) else None, as_numpy=as_numpy) for i, t in enumerate(tensors)
    }


def decode_outputs(response: ModelInferResponse, *, as_numpy: bool = False) -> dict[str, Any]:
    """Every output of a response, by name."""
    return _decode_all(response.outputs, response.raw_output_contents, as_numpy)


def decode_inputs(request: ModelInferRequest, *, as_numpy: bool = False) -> dict[str, Any]:
    """Every input of a request, by name: the handler-side mirror of ``encode_inputs``."""
    return _decode_all(request.inputs, request.raw_input_contents, as_numpy)
