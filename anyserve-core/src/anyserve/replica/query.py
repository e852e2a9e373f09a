"""Where a request's capability query comes from.

In order: ``x-capability-<key>`` gRPC metadata; else request parameters named
``capability.<key>``; else the plain KServe fields, ``model_name`` -> ``type``
and ``model_version`` -> ``model``, so stock KServe clients work unchanged.
Only the last two need the request parsed, and only then is it parsed.
"""

from __future__ import annotations

from collections.abc import Iterable

from anyserve._proto.grpc_predict_v2_pb2 import InferParameter, ModelInferRequest
from anyserve.capability import normalize_key

METADATA_PREFIX = "x-capability-"
PARAMETER_PREFIX = "capability."
DEPTH_METADATA = "x-delegation-depth"
DELEGATED_FROM_METADATA = "x-delegated-from"


def _param_text(param: InferParameter) -> str:
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        return ""
    value = getattr(param, choice)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in metadata or ():
        if key.startswith(METADATA_PREFIX) and not key.endswith("-bin"):
            query[normalize_key(key[len(METADATA_PREFIX) :])] = value if isinstance(value, str) else value.decode()
    return query


def from_request(request: ModelInferRequest) -> dict[str, str]:
    query = {
        normalize_key(name[len(PARAMETER_PREFIX) :]): _param_text(param)
        for name, param in request.parameters.items()
        if name.startswith(PARAMETER_PREFIX)
    }
    if query:
        return query
    if request.model_name:
        query["type"] = request.model_name
    if request.model_version:
        query["model"] = request.model_version
    return query


def delegation_depth(metadata: Iterable[tuple[str, str | bytes]] | None) -> int:
    for key, value in metadata or ():
        if key == DEPTH_METADATA:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
