"""anyserve: a capability-routed serving runtime.

The user API lives here: :class:`AnyServe` and its ``@app.capability``
decorator, :class:`Capability`, :class:`Context`, :class:`Stream`,
:class:`ObjRef`, the KServe v2 protobuf messages, and ``hookimpl`` for
plugins.
"""

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
from anyserve.app import AnyServe, Handler
from anyserve.capability import Capability
from anyserve.context import Context
from anyserve.errors import AnyServeError
from anyserve.hookspecs import hookimpl
from anyserve.objects import ObjRef
from anyserve.stream import Stream
from anyserve.version import __version__

InferInputTensor = ModelInferRequest.InferInputTensor
InferRequestedOutputTensor = ModelInferRequest.InferRequestedOutputTensor
InferOutputTensor = ModelInferResponse.InferOutputTensor

__all__ = [
    "AnyServe",
    "AnyServeError",
    "Capability",
    "Context",
    "Handler",
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
    "ObjRef",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
    "Stream",
    "__version__",
    "hookimpl",
]
