"""kserve's ``InferenceRESTClient`` (protocol v2) against the router's KServe v2 REST API.

``python kserve_rest_client.py http://HOST:PORT`` (with .venv-kserve's
python) prints one JSON report (see client_report.py). ``set_data_from_numpy``
sends inputs as binary data after the JSON header by default
(``inference-header-content-length``, ``content-type:
application/octet-stream``); outputs come back as JSON unless the request
parameter ``binary_data_output`` asks for binary. The client has no metadata
call: model metadata is a plain GET, read with kserve's own response model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import httpx
from client_report import INPUTS, MODEL, OUTPUTS, UNKNOWN, VERSION, describe_array, emit
from client_report import attempt_async as attempt
from client_report import metadata_tensors as tensors
from kserve.inference_client import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse

TIMEOUT_S = 30.0


def inputs(binary: bool = True) -> list[InferInput]:
    tensors_ = []
    for name, datatype, value in INPUTS:
        tensor = InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors_.append(tensor)
    return tensors_


#: The JSON part of the last response the client read, as the server sent it: the client turns binary
#: outputs into plain data as it reads them, so only the wire shows which outputs came binary.
LAST_HEADER: dict[str, Any] = {}


async def _keep_header(response: httpx.Response) -> None:
    await response.aread()
    length = response.headers.get("inference-header-content-length")
    body = response.content[: int(length)] if length is not None else response.content
    LAST_HEADER.clear()
    with contextlib.suppress(ValueError):  # an error page: no outputs to describe
        LAST_HEADER.update(json.loads(body))


def describe_response(response: InferResponse) -> dict[str, Any]:
    by_name = {output.name: output for output in response.outputs}
    sent = {o["name"]: o for o in LAST_HEADER.get("outputs", [])}
    outputs = {}
    for name in OUTPUTS:
        output = by_name.get(name)
        described = describe_array(output.as_numpy() if output is not None else None, output and output.datatype)
        described["binary"] = "binary_data_size" in (sent.get(name, {}).get("parameters") or {})
        outputs[name] = described
    return {"id": response.id, "model_name": response.model_name, "outputs": outputs}


async def infer(
    client: InferenceRESTClient,
    base_url: str,
    model: str,
    binary_inputs: bool = True,
    parameters: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    request = InferRequest(
        model_name=model, infer_inputs=inputs(binary_inputs), request_id="interop-1", parameters=parameters
    )
    return describe_response(await client.infer(base_url, request, model_name=model, headers=headers))


async def metadata(http: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await http.get(path)
    response.raise_for_status()
    meta = ModelMetadataResponse.model_validate(response.json())
    return {
        "name": meta.name,
        "versions": meta.versions or [],
        "platform": meta.platform,
        "inputs": tensors(t.model_dump() for t in meta.inputs),
        "outputs": tensors(t.model_dump() for t in meta.outputs),
    }


async def main(base_url: str) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=TIMEOUT_S))
    client._client.event_hooks["response"].append(_keep_header)  # observes the wire; the client is unchanged
    http = httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S)
    try:
        report = {
            "client": "kserve.InferenceRESTClient",
            "server_live": await attempt(client.is_server_live(base_url)),
            "server_ready": await attempt(client.is_server_ready(base_url)),
            "model_ready": await attempt(client.is_model_ready(base_url, MODEL)),
            "unknown_ready": await attempt(client.is_model_ready(base_url, UNKNOWN)),
            "infer": await attempt(infer(client, base_url, MODEL)),
            "infer_binary_outputs": await attempt(
                infer(client, base_url, MODEL, parameters={"binary_data_output": True})
            ),
            "infer_json": await attempt(infer(client, base_url, MODEL, binary_inputs=False)),
            "routed": await attempt(infer(client, base_url, "ignored", headers={"X-Capability-Type": MODEL})),
            "metadata": await attempt(metadata(http, f"/v2/models/{MODEL}")),
            "metadata_versioned": await attempt(metadata(http, f"/v2/models/{MODEL}/versions/{VERSION}")),
            "unknown_infer": await attempt(infer(client, base_url, UNKNOWN)),
            "unknown_metadata": await attempt(metadata(http, f"/v2/models/{UNKNOWN}")),
        }
    finally:
        await http.aclose()
        await client.close()
    emit(report)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
