"""tritonclient.http against the router's KServe v2 REST API.

``python triton_http_client.py http://HOST:PORT`` prints one JSON report (see
client_report.py). By default tritonclient.http sends every input as binary
data after the JSON header (``Inference-Header-Content-Length``) and, when no
outputs are named, asks for every output in binary (request parameter
``binary_data_output``); the other requests here name their outputs with
``binary_data`` per output, or send everything as JSON.
"""

from __future__ import annotations

import sys
from typing import Any

import tritonclient.http as httpclient
from client_report import INPUTS, MODEL, OUTPUTS, UNKNOWN, VERSION, attempt, describe_array, emit, metadata_tensors

#: Binary per output for the mixed request: text and integers binary, floats as JSON.
MIXED_BINARY = {"text_out": True, "x_out": False, "n_out": True}


def inputs(binary: bool = True) -> list[httpclient.InferInput]:
    tensors = []
    for name, datatype, value in INPUTS:
        tensor = httpclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors.append(tensor)
    return tensors


def describe_result(result: httpclient.InferResult) -> dict[str, Any]:
    response = result.get_response()
    outputs = {}
    for name in OUTPUTS:
        output = result.get_output(name) or {}
        described = describe_array(result.as_numpy(name), output.get("datatype"))
        described["binary"] = "binary_data_size" in (output.get("parameters") or {})
        outputs[name] = described
    return {
        "id": response.get("id"),
        "model_name": response.get("model_name"),
        "model_version": response.get("model_version"),
        "outputs": outputs,
    }


def infer(
    client: httpclient.InferenceServerClient,
    model: str,
    binary_inputs: bool = True,
    binary_outputs: dict[str, bool] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    outputs = None
    if binary_outputs is not None:
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_outputs[name]) for name in OUTPUTS]
    result = client.infer(model, inputs(binary_inputs), outputs=outputs, request_id="interop-1", **kwargs)
    return describe_result(result)


def metadata(client: httpclient.InferenceServerClient, model: str, version: str = "") -> dict[str, Any]:
    meta = client.get_model_metadata(model, model_version=version)
    return {
        "name": meta.get("name"),
        "versions": meta.get("versions", []),
        "platform": meta.get("platform"),
        "inputs": metadata_tensors(meta.get("inputs", [])),
        "outputs": metadata_tensors(meta.get("outputs", [])),
    }


def main(url: str) -> None:
    # tritonclient.http takes host:port (scheme chosen by its ssl flag)
    client = httpclient.InferenceServerClient(
        url=url.removeprefix("http://"), network_timeout=30.0, connection_timeout=10.0
    )
    try:
        report = {
            "client": "tritonclient.http",
            "server_live": attempt(client.is_server_live),
            "server_ready": attempt(client.is_server_ready),
            "server_metadata": attempt(client.get_server_metadata),
            "model_ready": attempt(client.is_model_ready, MODEL),
            "model_ready_versioned": attempt(client.is_model_ready, MODEL, VERSION),
            "unknown_ready": attempt(client.is_model_ready, UNKNOWN),
            "infer": attempt(infer, client, MODEL),
            "infer_versioned": attempt(infer, client, MODEL, model_version=VERSION),
            "infer_mixed_outputs": attempt(infer, client, MODEL, binary_outputs=MIXED_BINARY),
            "infer_json": attempt(
                infer, client, MODEL, binary_inputs=False, binary_outputs=dict.fromkeys(OUTPUTS, False)
            ),
            "routed": attempt(infer, client, "ignored", headers={"X-Capability-Type": MODEL}),
            "metadata": attempt(metadata, client, MODEL),
            "metadata_versioned": attempt(metadata, client, MODEL, VERSION),
            "unknown_infer": attempt(infer, client, UNKNOWN),
            "unknown_metadata": attempt(metadata, client, UNKNOWN),
        }
    finally:
        client.close()
    emit(report)


if __name__ == "__main__":
    main(sys.argv[1])
