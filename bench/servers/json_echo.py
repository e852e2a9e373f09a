"""The bare HTTP floor's KServe v2 REST echo: the least any server speaking KServe v2 JSON must do.

``POST /v2/models/{name}/infer``: the body read with the stdlib ``json``
module and each input answered as an output with the same name, datatype,
shape and data (no validation, no conversion, no protobuf), in the fields
the router's answer has. With ``Inference-Header-Content-Length`` the body
is the binary tensor extension: the JSON header is parsed, each input's
``binary_data_size`` bytes are cut from the rest, and the answer is a JSON
header with every output's ``binary_data_size`` followed by the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

HEADER_LENGTH = "inference-header-content-length"
BINARY_DATA_SIZE = "binary_data_size"


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _answer(name: str, data: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model_name": name, "model_version": "", "id": data.get("id", ""), "parameters": {}, "outputs": outputs}


def json_echo(name: str, body: bytes) -> bytes:
    data = json.loads(body)
    outputs = [
        {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"], "parameters": {}, "data": t["data"]}
        for t in data.get("inputs", ())
    ]
    return _dumps(_answer(name, data, outputs))


def binary_echo(name: str, body: bytes, header_length: int) -> tuple[bytes, int]:
    """The echo as the binary extension: (body, length of its JSON header)."""
    data = json.loads(body[:header_length])
    rest = memoryview(body)[header_length:]
    outputs, blobs, offset = [], [], 0
    for t in data.get("inputs", ()):
        size = t["parameters"][BINARY_DATA_SIZE]
        blobs.append(rest[offset : offset + size])
        offset += size
        outputs.append(
            {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"], "parameters": {BINARY_DATA_SIZE: size}}
        )
    header = _dumps(_answer(name, data, outputs))
    return b"".join([header, *blobs]), len(header)


async def v2_infer(request: Request) -> Response:
    name = request.path_params["name"]
    body = await request.body()
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        return Response(json_echo(name, body), media_type="application/json")
    answer, length = binary_echo(name, body, int(header_length))
    return Response(answer, media_type="application/octet-stream", headers={HEADER_LENGTH: str(length)})
