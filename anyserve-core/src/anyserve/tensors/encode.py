"""Python values -> KServe v2 input tensors.

The datatype is chosen so decoding gives the same value back: ``str`` and
``bytes`` both travel as BYTES but ``str`` carries ``content_type=str``;
an :class:`~anyserve.objects.ObjRef` travels as its string form flagged with
``anyserve.objref``; ``bool`` is never confused with ``int``. numpy is
optional and only used when the caller already passes numpy values.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from anyserve.objects import ObjRef
from anyserve.protocol.datatypes import TensorError, lookup, pack_bytes, pack_raw
from anyserve.protocol.messages import InferTensorContents, ModelInferRequest
from anyserve.protocol.names import CONTENT_TYPE_PARAMETER, OBJREF_PARAMETER, STR_CONTENT_TYPE
from anyserve.protocol.shapes import check_rank, tensor_elements
from anyserve.tensors.parameters import set_parameters


class Tensor(NamedTuple):
    """A value ready for the wire: datatype, shape, flat row-major elements, tensor parameters."""

    datatype: str
    shape: list[int]
    #: A list of Python values, or a flat numpy array for numeric numpy input.
    values: Any
    parameters: dict[str, Any]

    def raw(self) -> bytes:
        """The elements as raw contents (little-endian; BYTES length-prefixed)."""
        if self.datatype == "BYTES":
            return pack_bytes(_to_bytes(self.values))
        dt = lookup(self.datatype)
        if not isinstance(self.values, list) and dt.name != "BF16":  # numpy: one copy, no per-element work
            return self.values.astype(dt.numpy, copy=False).tobytes()
        return pack_raw(dt, self.values if isinstance(self.values, list) else self.values.tolist())

    def fill(self, contents: InferTensorContents) -> None:
        """The elements as typed contents, the form every KServe v2 server accepts."""
        field = lookup(self.datatype).field
        if field is None:
            raise TensorError(f"{self.datatype} has no typed contents field; it travels only as raw contents")
        values = self.values if isinstance(self.values, list) else self.values.tolist()
        getattr(contents, field).extend(_to_bytes(values) if self.datatype == "BYTES" else values)


def _to_bytes(values: Sequence[Any]) -> list[bytes]:
    out = []
    for v in values:
        if isinstance(v, str):
            out.append(v.encode("utf-8"))
        elif isinstance(v, ObjRef):
            out.append(v.to_string().encode("utf-8"))
        else:
            out.append(bytes(v))
    return out


def _numpy() -> Any:
    """numpy if the caller has imported it: a value cannot be an array otherwise."""
    return sys.modules.get("numpy")


# -- plain Python values -----------------------------------------------------


def _shape_of(value: Any, name: str) -> list[int]:
    shape = []
    while isinstance(value, list | tuple):
        check_rank(len(shape) + 1, f"input {name!r}")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], depth: int, out: list[Any], name: str, path: tuple[int, ...]) -> None:
    if depth == len(shape):
        if isinstance(value, list | tuple):
            raise TensorError(f"input {name!r} is ragged: element {list(path)} is nested deeper than element [0]")
        out.append(value)
        return
    if not isinstance(value, list | tuple) or len(value) != shape[depth]:
        got = f"length {len(value)}" if isinstance(value, list | tuple) else f"a {type(value).__name__}"
        raise TensorError(
            f"input {name!r} is ragged: element {list(path)} is {got}, expected length {shape[depth]} "
            f"(tensor shape {shape} from the first elements; nested lists must be rectangular)"
        )
    for i, item in enumerate(value):
        _flatten(item, shape, depth + 1, out, name, (*path, i))


def _kind(value: Any, name: str) -> str:
    np = _numpy()
    if isinstance(value, bool) or (np is not None and isinstance(value, np.bool_)):
        return "BOOL"
    if isinstance(value, numbers.Integral):
        return "INT64"
    if isinstance(value, numbers.Real):
        return "FP64"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, ObjRef):
        return "objref"
    raise TensorError(
        f"input {name!r}: cannot encode a {type(value).__name__} "
        "(use str, bytes, bool, int, float, ObjRef, nested lists of one of them, or a numpy array)"
    )


def _from_elements(flat: list[Any], name: str) -> tuple[str, list[Any], dict[str, Any]]:
    """Datatype, converted elements and tensor parameters for a flat list of Python values."""
    kinds = {_kind(v, name) for v in flat}
    if kinds <= {"INT64", "FP64"} and "FP64" in kinds:  # numeric promotion, as numpy does
        return "FP64", [float(v) for v in flat], {}
    if not kinds:  # an empty tensor has no element type; numpy's default is float64
        return "FP64", [], {}
    if len(kinds) > 1:
        raise TensorError(f"input {name!r} mixes element types {sorted(kinds)}; a tensor holds one type")
    (kind,) = kinds
    if kind == "BOOL":
        return "BOOL", [bool(v) for v in flat], {}
    if kind == "INT64":
        low, high = lookup("INT64").bounds or (0, 0)
        for v in flat:
            if not low <= v <= high:
                raise TensorError(
                    f"input {name!r}: integer {v} is outside the INT64 range [{low}, {high}]; "
                    "pass a numpy uint64 array for larger unsigned values, or a float"
                )
        return "INT64", [int(v) for v in flat], {}
    if kind == "FP64":
        return "FP64", [float(v) for v in flat], {}
    if kind == "str":
        return "BYTES", flat, {CONTENT_TYPE_PARAMETER: STR_CONTENT_TYPE}
    if kind == "objref":
        return "BYTES", flat, {OBJREF_PARAMETER: True}
    return "BYTES", [bytes(v) for v in flat], {}


# -- numpy arrays --------------------------------------------------------------


def _from_array(array: Any, name: str) -> Tensor:
    np = _numpy()
    array = np.asarray(array)
    shape = list(array.shape) or [1]
    tensor_elements(shape, f"input {name!r}")
    kind, size = array.dtype.kind, array.dtype.itemsize
    flat = array.reshape(-1)
    if kind == "b":
        return Tensor("BOOL", shape, flat, {})
    if kind in "iu" and size in (1, 2, 4, 8):
        return Tensor(f"{'INT' if kind == 'i' else 'UINT'}{size * 8}", shape, flat, {})
    if kind == "f" and size in (2, 4, 8):
        return Tensor(f"FP{size * 8}", shape, flat, {})
    if kind == "U":
        return Tensor("BYTES", shape, flat.tolist(), {CONTENT_TYPE_PARAMETER: STR_CONTENT_TYPE})
    if kind == "S":
        return Tensor("BYTES", shape, flat.tolist(), {})
    if kind == "O":  # whatever the elements are: str, bytes, ObjRef, numbers
        datatype, values, params = _from_elements(flat.tolist(), name)
        return Tensor(datatype, shape, values, params)
    raise TensorError(f"input {name!r}: numpy dtype {array.dtype} has no KServe v2 datatype")


# -- entry points --------------------------------------------------------------


def encode_value(value: Any, name: str = "input") -> Tensor:
    """One Python value as a tensor; a scalar becomes shape [1]."""
    np = _numpy()
    if np is not None and isinstance(value, np.ndarray | np.generic):
        return _from_array(value, name)
    if isinstance(value, list | tuple):
        shape = _shape_of(value, name)
        tensor_elements(shape, f"input {name!r}")
        flat: list[Any] = []
        _flatten(value, shape, 0, flat, name, ())
    else:
        shape, flat = [1], [value]
    datatype, values, params = _from_elements(flat, name)
    return Tensor(datatype, shape, values, params)


def encode_inputs(request: ModelInferRequest, inputs: Mapping[str, Any], *, raw: bool | None = None) -> None:
    """Add ``inputs`` to ``request``.

    Typed contents by default, since every server reads them; raw contents
    when ``raw`` is true or, with ``raw=None``, when an input needs them
    (FP16). A request is all typed or all raw: KServe forbids mixing.
    """
    tensors = [(name, encode_value(value, name)) for name, value in inputs.items()]
    needs_raw = [name for name, t in tensors if lookup(t.datatype).field is None]
    if raw is False and needs_raw:
        raise TensorError(f"inputs {needs_raw} are FP16, which travels only as raw contents; pass raw=None or True")
    place(tensors, request.inputs, request.raw_input_contents, raw=bool(needs_raw) if raw is None else raw)


def place(tensors: Sequence[tuple[str, Tensor]], messages: Any, raw_contents: Any, *, raw: bool) -> None:
    """Add named tensors to a message's ``inputs``/``outputs``: all as raw contents, or all typed."""
    for name, tensor in tensors:
        message = messages.add(name=name, datatype=tensor.datatype, shape=tensor.shape)
        set_parameters(message.parameters, tensor.parameters)
        if raw:
            raw_contents.append(tensor.raw())
        else:
            tensor.fill(message.contents)
