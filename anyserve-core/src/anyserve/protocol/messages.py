"""The KServe v2 protobuf messages and gRPC stubs, under the names the rest of anyserve imports.

The generated code lives in ``anyserve._proto`` (``./dev proto`` writes it);
everything else, the router included, reaches it through this module.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from anyserve._proto.grpc_predict_v2_pb2 import DESCRIPTOR as FILE_DESCRIPTOR
from anyserve._proto.grpc_predict_v2_pb2 import (
    InferParameter,
    InferTensorContents,
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelReadyRequest,
    ModelReadyResponse,
    ModelStreamInferResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
)
from anyserve._proto.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    GRPCInferenceServiceStub,
    add_GRPCInferenceServiceServicer_to_server,
)
from anyserve.errors import InvalidRequest
from anyserve.protocol.shapes import tensor_elements

InferInputTensor = ModelInferRequest.InferInputTensor
InferRequestedOutputTensor = ModelInferRequest.InferRequestedOutputTensor
InferOutputTensor = ModelInferResponse.InferOutputTensor
TensorMetadata = ModelMetadataResponse.TensorMetadata


def parse_request(payload: bytes) -> ModelInferRequest:
    """A serialised ``ModelInferRequest``; bytes that are not one are :class:`InvalidRequest`, never a crash.

    Every input's shape is checked against the tensor bounds here, where the
    router and every worker read a request, so a handler never sees a shape
    that would make a decoder (or its own ``numpy.zeros(shape)``) allocate
    what no byte of the request paid for.
    """
    try:
        request = ModelInferRequest.FromString(payload)
    except DecodeError as exc:
        raise InvalidRequest(f"malformed ModelInferRequest: {exc}") from None
    for tensor in request.inputs:
        tensor_elements(tensor.shape, f"input {tensor.name!r}")
    return request


__all__ = [
    "FILE_DESCRIPTOR",
    "GRPCInferenceServiceServicer",
    "GRPCInferenceServiceStub",
    "InferInputTensor",
    "InferOutputTensor",
    "InferParameter",
    "InferRequestedOutputTensor",
    "InferTensorContents",
    "ModelInferRequest",
    "ModelInferResponse",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ModelStreamInferResponse",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
    "TensorMetadata",
    "add_GRPCInferenceServiceServicer_to_server",
    "parse_request",
]
