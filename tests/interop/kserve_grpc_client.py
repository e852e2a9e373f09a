"""kserve's ``InferenceGRPCClient`` against a KServe v2 gRPC endpoint (a replica, or the router's gRPC port).

``python kserve_grpc_client.py HOST:PORT`` (with .venv-kserve's python)
prints one JSON report (see client_report.py). The client has no metadata
call and no streaming, so model metadata goes through the gRPC stub kserve
ships (``kserve.protocol.grpc``). ``set_data_from_numpy`` sends
``raw_input_contents`` by default; ``infer_contents`` sends typed contents.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
from client_report import INPUTS, MODEL, OUTPUTS, UNKNOWN, VERSION, describe_array, emit
from client_report import attempt_async as attempt
from client_report import metadata_tensors as tensors
from kserve.inference_client import InferenceGRPCClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

TIMEOUT_S = 30.0


def inputs(raw: bool = True) -> list[InferInput]:
    tensors_ = []
    for name, datatype, value in INPUTS:
        if raw:
            tensor = InferInput(name, list(value.shape), datatype)
            tensor.set_data_from_numpy(value)
        else:
            data = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
            tensor = InferInput(name, list(value.shape), datatype, data=data)
        tensors_.append(tensor)
    return tensors_


def describe_response(response: InferResponse) -> dict[str, Any]:
    by_name = {output.name: output for output in response.outputs}
    outputs = {}
    for name in OUTPUTS:
        output = by_name.get(name)
        outputs[name] = describe_array(
            output.as_numpy() if output is not None else None, output.datatype if output else None
        )
    return {"id": response.id, "model_name": response.model_name, "outputs": outputs}


async def infer(
    client: InferenceGRPCClient, model: str, version: str | None = None, raw: bool = True, headers: Any = None
) -> dict[str, Any]:
    request = InferRequest(model_name=model, infer_inputs=inputs(raw), request_id="interop-1", model_version=version)
    return describe_response(await client.infer(request, headers=headers))


async def metadata(stub: GRPCInferenceServiceStub, model: str, version: str = "") -> dict[str, Any]:
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version), timeout=TIMEOUT_S)
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": tensors(meta.inputs),
        "outputs": tensors(meta.outputs),
    }


async def main(url: str) -> None:
    client = InferenceGRPCClient(url, timeout=TIMEOUT_S)
    channel = grpc.aio.insecure_channel(url)
    stub = GRPCInferenceServiceStub(channel)
    try:
        report = {
            "client": "kserve.InferenceGRPCClient",
            "server_live": await attempt(client.is_server_live()),
            "server_ready": await attempt(client.is_server_ready()),
            "model_ready": await attempt(client.is_model_ready(MODEL)),
            "unknown_ready": await attempt(client.is_model_ready(UNKNOWN)),
            "infer": await attempt(infer(client, MODEL)),
            "infer_versioned": await attempt(infer(client, MODEL, version=VERSION)),
            "infer_contents": await attempt(infer(client, MODEL, raw=False)),
            "routed": await attempt(infer(client, "ignored", headers=(("x-capability-type", MODEL),))),
            "metadata": await attempt(metadata(stub, MODEL)),
            "metadata_versioned": await attempt(metadata(stub, MODEL, VERSION)),
            "unknown_infer": await attempt(infer(client, UNKNOWN)),
            "unknown_metadata": await attempt(metadata(stub, UNKNOWN)),
        }
    finally:
        await channel.close()
        await client.close()
    emit(report)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
