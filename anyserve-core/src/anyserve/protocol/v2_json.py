"""KServe v2 REST bodies <-> the protobuf messages replicas speak.

Requests are validated here, once, with messages that name the tensor and
the element at fault, so a bad body is a 400 from the router rather than an
opaque failure inside a replica. A body may use the binary tensor extension
(:mod:`anyserve.protocol.binary`): tensors whose ``binary_data_size``
parameter says how many bytes of the binary part are theirs; then every
input travels as raw contents, since KServe forbids mixing raw and typed
inputs. Responses are converted the other way: ``contents`` or
``raw_output_contents``, BYTES as UTF-8 text, or base64 with the output
parameter ``content_encoding: base64`` when they are not text; outputs the
client asked for in binary go to the binary part.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from anyserve.errors import AnyServeError, InvalidRequest
from anyserve.protocol import messages as pb
from anyserve.protocol.binary import BinaryPart, BinaryWanted
from anyserve.protocol.datatypes import BYTES, CONTENT_FIELDS, DATATYPES, DataType, pack_raw, unpack_bytes, unpack_raw
from anyserve.protocol.names import BASE64, BINARY_DATA_SIZE
from anyserve.protocol.names import CONTENT_ENCODING_PARAMETER as CONTENT_ENCODING
from anyserve.protocol.shapes import MAX_TENSOR_RANK, check_rank, tensor_elements
from anyserve.protocol.strict_json import dumps, loads_object, quote

__all__ = [
    "dumps",
    "loads_object",
    "metadata_to_json",
    "output_raw",
    "parameters_to_json",
    "parse_infer_json",
    "parse_tensor",
    "place_tensors",
    "response_to_json",
    "set_parameter",
]

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1
_KINDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "bytes": "a string"}
_DATATYPE_NAMES = ", ".join(DATATYPES)


# -- parameters ------------------------------------------------------------------


def set_parameter(target: pb.InferParameter, value: Any, where: str) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            target.int64_param = value
        elif 0 <= value <= _UINT64_MAX:
            target.uint64_param = value
        else:
            raise InvalidRequest(f"{where} = {value} does not fit in 64 bits")
    elif isinstance(value, float):
        target.double_param = value
    elif isinstance(value, str):
        target.string_param = value
    else:
        raise InvalidRequest(f"{where} must be a string, number or boolean, got {type(value).__name__} {quote(value)}")


def _fill_parameters(target: Any, raw: Any, where: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object, got {type(raw).__name__}")
    for key, value in raw.items():
        set_parameter(target[key], value, f"{where}.{key}")


def parameters_to_json(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, param in parameters.items():
        choice = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, choice) if choice else None
    return out


# -- requests --------------------------------------------------------------------


def _flatten(items: list[Any], out: list[Any], where: str, depth: int = 1) -> None:
    """Nested data in row-major order; nesting deeper than a shape may be is refused, not recursed into."""
    for item in items:
        if isinstance(item, list):
            if depth >= MAX_TENSOR_RANK:
                raise InvalidRequest(f"{where}: data is nested deeper than {MAX_TENSOR_RANK} levels")
            _flatten(item, out, where, depth + 1)
        else:
            out.append(item)


def _shape(raw: Any, where: str) -> tuple[list[int], int]:
    """The shape and the number of elements it holds, within the tensor bounds (before anything is built)."""
    if isinstance(raw, list):
        check_rank(len(raw), where)
    if not isinstance(raw, list) or not all(type(d) is int and d >= 0 for d in raw):
        raise InvalidRequest(f"{where}: shape must be a list of non-negative integers, got {quote(raw)}")
    return raw, tensor_elements(raw, where)


def _bad_element(values: list[Any], dt: DataType, where: str) -> InvalidRequest:
    for i, value in enumerate(values):
        if not _fits(dt, value):
            short = isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 40)
            shown = json.dumps(value) if short else quote(value)
            return InvalidRequest(
                f"{where}: data[{i}] = {shown} ({type(value).__name__}) is not {_KINDS[dt.kind]} as {dt.name} needs"
            )
    return InvalidRequest(f"{where}: data does not match datatype {dt.name}")


#: The JSON value types each kind of datatype accepts (``bool`` is never an ``int`` here).
_ACCEPTS: dict[str, frozenset[type]] = {
    "float": frozenset({float, int}),
    "int": frozenset({int}),
    "bool": frozenset({bool}),
    "bytes": frozenset({str}),
}


def _fits(dt: DataType, value: Any) -> bool:
    return type(value) in _ACCEPTS[dt.kind]


def _elements(dt: DataType, values: list[Any], kinds: set[type], params: Mapping[str, Any], where: str) -> list[Any]:
    """Checked elements in the form protobuf stores them (BYTES as bytes).

    ``kinds`` is the set of the elements' types, built in C (``map(type, ...)``):
    a 1 MiB tensor is a million elements, and a Python-level loop over them
    would cost more than parsing the JSON did.
    """
    if not kinds <= _ACCEPTS[dt.kind]:
        raise _bad_element(values, dt, where)
    if dt.bounds and values:
        low, high = dt.bounds
        smallest, largest = min(values), max(values)
        if smallest < low or largest > high:
            bad = smallest if smallest < low else largest
            raise InvalidRequest(f"{where}: value {bad} is out of range for {dt.name} ({low}..{high})")
    if dt.name != BYTES:
        return values
    if params.get(CONTENT_ENCODING) == BASE64:
        try:
            return [base64.b64decode(v, validate=True) for v in values]
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"{where}: data is marked content_encoding=base64 but is not base64: {exc}") from None
    try:
        return [v.encode("utf-8") for v in values]
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{where}: a string is not encodable as UTF-8: {exc}") from None


def _binary_input(dt: DataType, shape: list[int], count: int, size: Any, part: BinaryPart | None, where: str) -> bytes:
    """An input's raw bytes from the body's binary part, checked against its shape."""
    if part is None:
        raise InvalidRequest(
            f"{where}: parameter {BINARY_DATA_SIZE} needs a binary body (Inference-Header-Content-Length header)"
        )
    if type(size) is not int or size < 0:
        raise InvalidRequest(f"{where}: {BINARY_DATA_SIZE} must be a non-negative integer, got {quote(size)}")
    data = part.take(size, where)
    if dt.name == BYTES:
        got = len(unpack_bytes(data, where))
        if got != count:
            raise InvalidRequest(f"{where}: shape {shape} holds {count} elements but the binary data has {got}")
    elif len(data) != count * dt.itemsize:
        raise InvalidRequest(
            f"{where}: shape {shape} needs {count * dt.itemsize} bytes of {dt.name}, binary data has {len(data)}"
        )
    return data


#: A tensor read off JSON: its message (input or output tensor), datatype, and plain elements or raw bytes.
Parsed = tuple[Any, DataType, "list[Any] | bytes"]


def parse_tensor(raw: Any, index: int, part: BinaryPart | None, kind: str = "input", message: Any = None) -> Parsed:
    """One JSON tensor (``kind`` ``"input"`` or ``"output"``) as a tensor message without contents, checked.

    ``message`` is the message class to fill (``InferInputTensor`` unless given).
    """
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{kind}s[{index}] must be an object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{kind}s[{index}] needs a non-empty string 'name', got {quote(name)}")
    where = f"{kind} {quote(name)}"
    datatype = raw.get("datatype")
    dt = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dt is None:
        raise InvalidRequest(
            f"{where}: datatype {quote(datatype)} is not a KServe v2 datatype; use one of {_DATATYPE_NAMES}"
        )
    shape, count = _shape(raw.get("shape"), where)
    params = raw.get("parameters") or {}
    tensor = (message or pb.InferInputTensor)(name=name, datatype=dt.name, shape=shape)
    if isinstance(params, dict) and BINARY_DATA_SIZE in params:
        data = _binary_input(dt, shape, count, params[BINARY_DATA_SIZE], part, where)
        rest = {k: v for k, v in params.items() if k != BINARY_DATA_SIZE}
        _fill_parameters(tensor.parameters, rest, f"{where}: parameters")
        return tensor, dt, data
    data = raw.get("data")
    if not isinstance(data, list):
        raise InvalidRequest(f"{where}: data must be a list (flat or nested), got {type(data).__name__}")
    flat: list[Any] = data
    kinds = set(map(type, data))
    if list in kinds:  # nested: row-major order
        flat = []
        _flatten(data, flat, where)
        kinds = set(map(type, flat))
    if count != len(flat):
        raise InvalidRequest(f"{where}: shape {shape} holds {count} elements but data has {len(flat)}")
    _fill_parameters(tensor.parameters, params, f"{where}: parameters")
    return tensor, dt, _elements(dt, flat, kinds, params, where)


def place_tensors(converted: list[Parsed], tensors: Any, raw_contents: Any, kind: str) -> None:
    """Append parsed tensors to a message's ``inputs``/``outputs`` and ``raw_*_contents``.

    A message is all typed or all raw (KServe forbids mixing): FP16/BF16 have
    no contents field and binary data is raw already, so either makes every
    tensor travel raw.
    """
    seen: set[str] = set()
    raw_mode = any(dt.field is None or isinstance(values, bytes) for _, dt, values in converted)
    for tensor, dt, values in converted:
        if tensor.name in seen:
            raise InvalidRequest(f"{kind} {tensor.name!r} is given twice")
        seen.add(tensor.name)
        # Appended before it is filled: appending a filled message copies it, a million elements included.
        tensors.append(tensor)
        if isinstance(values, bytes):
            raw_contents.append(values)
        elif raw_mode:
            raw_contents.append(pack_raw(dt, values))
        elif values:
            getattr(tensors[-1].contents, dt.field).extend(values)


def parse_infer_json(
    body: bytes, *, model_name: str = "", model_version: str = "", header_length: int | None = None
) -> pb.ModelInferRequest:
    """A KServe v2 JSON inference request as a ``ModelInferRequest``; :class:`InvalidRequest` if malformed.

    ``header_length`` (the ``Inference-Header-Content-Length`` header) says
    the JSON is only the body's first bytes and binary tensor data follows.
    """
    part: BinaryPart | None = None
    if header_length is not None:
        part = BinaryPart.split(body, header_length)
        body = part.header
    data = loads_object(body)
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version)
    request_id = data.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequest(f"'id' must be a string, got {type(request_id).__name__}")
    request.id = request_id
    _fill_parameters(request.parameters, data.get("parameters"), "parameters")
    inputs = data.get("inputs", [])
    if not isinstance(inputs, list):
        raise InvalidRequest(f"'inputs' must be a list of tensors, got {type(inputs).__name__}")
    converted = [parse_tensor(raw, i, part) for i, raw in enumerate(inputs)]
    if part is not None:
        part.check_used()
    place_tensors(converted, request.inputs, request.raw_input_contents, "input")
    outputs = data.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidRequest(f"'outputs' must be a list, got {type(outputs).__name__}")
    for i, raw in enumerate(outputs):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"outputs[{i}] needs a non-empty string 'name'")
        wanted = request.outputs.add(name=name)
        _fill_parameters(wanted.parameters, raw.get("parameters"), f"output {name!r}: parameters")
    return request


# -- responses -------------------------------------------------------------------


def _output_values(tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None) -> list[Any]:
    dt = DATATYPES.get(tensor.datatype)
    if raw is not None:
        if dt is None:
            raise AnyServeError(f"output {tensor.name!r}: raw contents of unknown datatype {tensor.datatype!r}")
        try:
            return unpack_raw(dt, raw, f"output {tensor.name!r}")
        except ValueError as exc:
            raise AnyServeError(f"output {tensor.name!r}: raw contents do not fit {dt.name}: {exc}") from None
    if dt is not None and dt.field is not None:
        return list(getattr(tensor.contents, dt.field))
    # Unknown datatype (or FP16 sent without raw): whichever field the replica filled.
    for field in CONTENT_FIELDS:
        values = getattr(tensor.contents, field)
        if values:
            return list(values)
    return []


def _utf8(values: list[bytes]) -> list[str] | None:
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        return None


def output_raw(tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None) -> bytes:
    """An output's elements as raw bytes, whichever form the replica answered in."""
    if raw is not None:
        return raw
    dt = DATATYPES.get(tensor.datatype)
    if dt is None:
        raise AnyServeError(f"output {tensor.name!r}: cannot send unknown datatype {tensor.datatype!r} as binary")
    return pack_raw(dt, _output_values(tensor, None))


def _output(
    tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None, blobs: list[bytes] | None = None
) -> dict[str, Any]:
    params = parameters_to_json(tensor.parameters)
    if blobs is not None:
        blob = output_raw(tensor, raw)
        blobs.append(blob)
        params[BINARY_DATA_SIZE] = len(blob)
        return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "parameters": params}
    data = _output_values(tensor, raw)
    if data and isinstance(data[0], bytes):
        # Text when it is UTF-8, unless the replica marked the tensor base64 itself.
        text = None if params.get(CONTENT_ENCODING) == BASE64 else _utf8(data)
        if text is None:
            data = [base64.b64encode(v).decode("ascii") for v in data]
            params[CONTENT_ENCODING] = BASE64
        else:
            data = text
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "parameters": params,
        "data": data,
    }


def response_to_json(
    response: pb.ModelInferResponse, binary: BinaryWanted | None = None, blobs: list[bytes] | None = None
) -> dict[str, Any]:
    """A ``ModelInferResponse`` as KServe v2 JSON (a dict ready for :func:`dumps`).

    Outputs ``binary`` asks for leave their data out: their raw bytes are
    appended to ``blobs``, in order, and ``binary_data_size`` says how many.
    """
    raw = response.raw_output_contents
    outputs = [
        _output(
            t,
            raw[i] if i < len(raw) else None,
            blobs if binary is not None and blobs is not None and binary.wants(t.name) else None,
        )
        for i, t in enumerate(response.outputs)
    ]
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": parameters_to_json(response.parameters),
        "outputs": outputs,
    }


def metadata_to_json(response: pb.ModelMetadataResponse) -> dict[str, Any]:
    """A ``ModelMetadataResponse`` as KServe v2 REST's model metadata object."""

    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": tensors(response.inputs),
        "outputs": tensors(response.outputs),
    }
