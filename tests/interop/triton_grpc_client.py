"""tritonclient.grpc against a KServe v2 gRPC endpoint (a replica, or the router's gRPC port).

``python triton_grpc_client.py HOST:PORT`` prints one JSON report (see
client_report.py). Run in its own process: tritonclient registers its own
``inference.*`` protobuf messages, which clash with anyserve's.
"""

from __future__ import annotations

import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from client_report import (
    INPUTS,
    MODEL,
    OUTPUTS,
    PROMPT,
    STREAM_MODEL,
    UNKNOWN,
    VERSION,
    attempt,
    describe_array,
    describe_error,
    emit,
    metadata_tensors,
)

FINAL = "triton_final_response"
STREAM_TIMEOUT_S = 30


def inputs() -> list[grpcclient.InferInput]:
    tensors = []
    for name, datatype, value in INPUTS:
        tensor = grpcclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def describe_result(result: grpcclient.InferResult) -> dict[str, Any]:
    response = result.get_response()
    outputs = {}
    for name in OUTPUTS:
        output = result.get_output(name)
        outputs[name] = describe_array(result.as_numpy(name), output.datatype if output is not None else None)
    return {
        "id": response.id,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
        "raw_outputs": len(response.raw_output_contents),
    }


def infer(client: grpcclient.InferenceServerClient, model: str, **kwargs: Any) -> dict[str, Any]:
    return describe_result(client.infer(model_name=model, inputs=inputs(), request_id="interop-1", **kwargs))


def metadata(client: grpcclient.InferenceServerClient, model: str, version: str = "") -> dict[str, Any]:
    meta = client.get_model_metadata(model_name=model, model_version=version)
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": metadata_tensors(meta.inputs),
        "outputs": metadata_tensors(meta.outputs),
    }


def server_metadata(client: grpcclient.InferenceServerClient) -> dict[str, Any]:
    meta = client.get_server_metadata()
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def stream(client: grpcclient.InferenceServerClient, model: str) -> dict[str, Any]:
    """One request on the bidirectional stream; tokens through ``as_numpy`` until the final flag or an error."""
    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    tokens: list[str] = []
    finish, error, responses = None, None, 0
    try:
        prompt = grpcclient.InferInput("text", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
        client.async_stream_infer(model_name=model, inputs=[prompt], request_id="stream-1")
        while True:
            result, err = events.get(timeout=STREAM_TIMEOUT_S)
            if err is not None:
                error = describe_error(err) | {"text": str(err)}
                break
            responses += 1
            response = result.get_response()
            names = {o.name for o in response.outputs}
            if "text_output" in names:
                tokens.extend(v.decode() for v in result.as_numpy("text_output").ravel())
            if "finish_reason" in names:
                finish = result.as_numpy("finish_reason").ravel()[0].decode()
            if FINAL in response.parameters and response.parameters[FINAL].bool_param:
                break
    finally:
        client.stop_stream()
    return {"tokens": tokens, "finish_reason": finish, "error": error, "responses": responses}


def main(url: str) -> None:
    client = grpcclient.InferenceServerClient(url=url)
    try:
        report = {
            "client": "tritonclient.grpc",
            "server_live": attempt(client.is_server_live),
            "server_ready": attempt(client.is_server_ready),
            "server_metadata": attempt(server_metadata, client),
            "model_ready": attempt(client.is_model_ready, MODEL),
            "model_ready_versioned": attempt(client.is_model_ready, MODEL, VERSION),
            "unknown_ready": attempt(client.is_model_ready, UNKNOWN),
            "infer": attempt(infer, client, MODEL),
            "infer_versioned": attempt(infer, client, MODEL, model_version=VERSION),
            "routed": attempt(infer, client, "ignored", headers={"x-capability-type": MODEL}),
            "metadata": attempt(metadata, client, MODEL),
            "metadata_versioned": attempt(metadata, client, MODEL, VERSION),
            "unknown_infer": attempt(infer, client, UNKNOWN),
            "unknown_metadata": attempt(metadata, client, UNKNOWN),
            "stream": attempt(stream, client, STREAM_MODEL),
            "stream_unknown": attempt(stream, client, UNKNOWN),
        }
    finally:
        client.close()
    emit(report)


if __name__ == "__main__":
    main(sys.argv[1])
