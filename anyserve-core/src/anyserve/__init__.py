"""anyserve: a capability-routed serving runtime.

The user API lives here: :class:`AnyServe` and its ``@app.capability``
decorator, :class:`Capability`, :class:`Context`, :class:`Stream`,
:class:`ObjRef`, :class:`TensorSpec` (a handler's declared tensors), the
KServe v2 protobuf messages, and ``hookimpl`` for
plugins. ``Client`` (with ``InferResult`` and ``InferenceError``) is
imported on first use, so processes that never call a replica never load
the gRPC client.
"""

from typing import TYPE_CHECKING, Any

from anyserve.app import AnyServe, Handler
from anyserve.capability import Capability
from anyserve.context import Context
from anyserve.errors import AnyServeError
from anyserve.hookspecs import hookimpl
from anyserve.objects import ObjRef
from anyserve.protocol.messages import (
    InferInputTensor,
    InferOutputTensor,
    InferParameter,
    InferRequestedOutputTensor,
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
from anyserve.stream import Stream
from anyserve.tensors.outputs import TensorSpec
from anyserve.version import __version__
from anyserve.workers import Worker

if TYPE_CHECKING:
    from anyserve.client import Client
    from anyserve.results import InferenceError, InferResult

_LAZY = {"Client": "anyserve.client", "InferResult": "anyserve.results", "InferenceError": "anyserve.results"}


def __getattr__(name: str) -> Any:
    """Resolve the client names on first access (PEP 562) and cache them."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anyserve' has no attribute {name!r}")


__all__ = [
    "AnyServe",
    "AnyServeError",
    "Capability",
    "Client",
    "Context",
    "Handler",
    "InferInputTensor",
    "InferOutputTensor",
    "InferParameter",
    "InferRequestedOutputTensor",
    "InferResult",
    "InferTensorContents",
    "InferenceError",
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
    "TensorSpec",
    "Worker",
    "__version__",
    "hookimpl",
]
