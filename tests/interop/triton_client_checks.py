"""Drive a replica with the official Triton client and print what came back as JSON.

Run in its own process (``python triton_client_checks.py HOST:PORT``):
tritonclient registers its own ``inference.*`` protobuf messages in the
default descriptor pool, which clash with anyserve's in one process. This
script imports tritonclient and numpy only, never anyserve.
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

FINAL = "triton_final_response"


def unary(client: grpcclient.InferenceServerClient) -> dict[str, Any]:
    text = grpcclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"hello", "wörld".encode()], dtype=np.object_))
    vector = grpcclient.InferInput("vector", [2, 2], "FP32")
    vector.set_data_from_numpy(np.array([[0.5, -1.25], [3.0, 1e-3]], dtype=np.float32))
    wanted = [grpcclient.InferRequestedOutput("output_text"), grpcclient.InferRequestedOutput("output_vector")]
    result = client.infer(model_name="echo", inputs=[text, vector], outputs=wanted, request_id="tc-1")
    response = result.get_response()
    out_text, out_vector = result.as_numpy("output_text"), result.as_numpy("output_vector")
    return {
        "id": response.id,
        "text": [v.decode() for v in out_text.ravel()],
        "text_shape": list(out_text.shape),
        "text_datatype": result.get_output("output_text").datatype,
        "vector": out_vector.tolist(),
        "vector_dtype": str(out_vector.dtype),
        "vector_shape": list(out_vector.shape),
        "vector_datatype": result.get_output("output_vector").datatype,
        "inputs_went_raw": len(response.raw_output_contents) >= 2,
    }


def routed(client: grpcclient.InferenceServerClient) -> dict[str, Any]:
    """Capability metadata through tritonclient's ``headers``."""
    x = grpcclient.InferInput("x", [1], "INT64")
    x.set_data_from_numpy(np.array([7], dtype=np.int64))
    headers = {"x-capability-type": "chat", "x-capability-region": "eu"}
    result = client.infer(model_name="ignored", inputs=[x], headers=headers)
    served_by = result.get_response().parameters["served_by"].string_param
    try:
        client.infer(model_name="nope", inputs=[x])
        error = None
    except InferenceServerException as exc:
        error = {"status": exc.status(), "message": exc.message()}
    return {"served_by": served_by, "x": result.as_numpy("output_x").tolist(), "unknown": error}


def stream(client: grpcclient.InferenceServerClient, model_name: str) -> dict[str, Any]:
    """One request on Triton's bidirectional stream; tokens until the final flag."""
    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    try:
        prompt = grpcclient.InferInput("text_input", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([b"Say hello"], dtype=np.object_))
        client.async_stream_infer(model_name=model_name, inputs=[prompt], request_id="s-1")
        tokens, finish, error = [], None, None
        while True:
            result, err = events.get(timeout=30)
            if err is not None:
                error = str(err)
                break
            response = result.get_response()
            names = {o.name: o for o in response.outputs}
            if "text_output" in names:
                tokens.append(names["text_output"].contents.bytes_contents[0].decode())
            if "finish_reason" in names:
                finish = names["finish_reason"].contents.bytes_contents[0].decode()
            if FINAL in response.parameters and response.parameters[FINAL].bool_param:
                break
    finally:
        client.stop_stream()
    return {"tokens": tokens, "text": "".join(tokens), "finish_reason": finish, "error": error}


def main(url: str) -> None:
    client = grpcclient.InferenceServerClient(url=url)
    try:
        report = {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "echo_ready": client.is_model_ready("echo"),
            "nope_ready": client.is_model_ready("nope"),
            "unary": unary(client),
            "routed": routed(client),
            "stream": stream(client, "chat"),
            "stream_unknown": stream(client, "nope"),
        }
    finally:
        client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
