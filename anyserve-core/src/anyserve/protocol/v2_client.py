"""The client's half of KServe v2 REST: a request message -> a body, a response body -> a message.

The router reads requests and writes responses (:mod:`anyserve.protocol.v2_json`);
a client over HTTP does the opposite, and so do tests that check the two
agree. A request is written as JSON, or with ``binary=True`` as the binary
tensor extension that Triton's and KServe's clients send by default.
"""

from __future__ import annotations

from typing import Any

from anyserve.errors import InvalidRequest
from anyserve.protocol import messages as pb
from anyserve.protocol.binary import BinaryPart, join
from anyserve.protocol.names import BINARY_DATA_SIZE, JSON, OCTET_STREAM
from anyserve.protocol.v2_json import (
    dumps,
    loads_object,
    output_raw,
    parameters_to_json,
    parse_tensor,
    place_tensors,
    response_to_json,
    set_parameter,
)


def _data(tensor: Any, raw: bytes | None) -> list[Any]:
    """A tensor's elements as JSON values (BYTES as text or base64, as the router writes them)."""
    return response_to_json(_as_output(tensor, raw))["outputs"][0]["data"]


def _as_output(tensor: Any, raw: bytes | None) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse()
    out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    out.contents.CopyFrom(tensor.contents)
    out.parameters.update(tensor.parameters)
    if raw is not None:
        response.raw_output_contents.append(raw)
    return response


def request_body(request: pb.ModelInferRequest, *, binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """``request`` as a KServe v2 REST body and the headers it needs (content type, binary header length)."""
    raws = request.raw_input_contents
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, tensor in enumerate(request.inputs):
        raw = raws[i] if i < len(raws) else None
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        params = parameters_to_json(tensor.parameters)
        if binary:
            blob = output_raw(_as_output(tensor, raw).outputs[0], raw)
            blobs.append(blob)
            params[BINARY_DATA_SIZE] = len(blob)
        else:
            entry["data"] = _data(tensor, raw)
            params.update(response_to_json(_as_output(tensor, raw))["outputs"][0]["parameters"])
        entry["parameters"] = params
        inputs.append(entry)
    data: dict[str, Any] = {"id": request.id, "parameters": parameters_to_json(request.parameters), "inputs": inputs}
    if request.outputs:
        data["outputs"] = [{"name": o.name, "parameters": parameters_to_json(o.parameters)} for o in request.outputs]
    if not binary:
        return dumps(data), {"Content-Type": JSON}
    body, headers = join(dumps(data), blobs)
    return body, {"Content-Type": OCTET_STREAM, **headers}


def parse_response(body: bytes, header_length: int | None = None) -> pb.ModelInferResponse:
    """A KServe v2 REST response body (JSON, or JSON then binary outputs) as a ``ModelInferResponse``."""
    part: BinaryPart | None = None
    if header_length is not None:
        part = BinaryPart.split(body, header_length)
        body = part.header
    data = loads_object(body, "response body")
    response = pb.ModelInferResponse(
        model_name=str(data.get("model_name", "")), model_version=str(data.get("model_version", "")),
        id=str(data.get("id", "")),
    )  # fmt: skip
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidRequest("response 'parameters' must be an object")
    for key, value in params.items():
        set_parameter(response.parameters[key], value, f"parameters.{key}")
    outputs = data.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidRequest("response 'outputs' must be a list")
    converted = [parse_tensor(raw, i, part, "output", pb.InferOutputTensor) for i, raw in enumerate(outputs)]
    if part is not None:
        part.check_used()
    place_tensors(converted, response.outputs, response.raw_output_contents, "output")
    return response
