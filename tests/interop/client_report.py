"""What every interop client script shares: the request it sends and the report it prints.

The scripts in this folder each drive one stock client (tritonclient.grpc,
tritonclient.http, kserve's gRPC and REST clients) in a process of its own
and print one JSON object. Every check is recorded as ``{"ok": value}`` or
``{"error": {"type", "status", "message"}}``, so one missing feature fails
its own test instead of the whole script. This module imports numpy only:
it runs beside tritonclient in ``.venv`` and beside kserve in
``.venv-kserve``, never beside anyserve.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

#: The unary capability of tests/apps/interop_app.py: model name ``mixed``, version ``1``.
MODEL = "mixed"
VERSION = "1"
#: Its streaming capability.
STREAM_MODEL = "tokens"
UNKNOWN = "nope"
PROMPT = "one two three"

#: The inputs every client sends (name, datatype, numpy value) ...
TEXT = np.array([b"hello", "wörld".encode()], dtype=np.object_)
X = np.array([0.5, -1.25, 3.0], dtype=np.float32)
N = np.array([1, -7, 2**40], dtype=np.int64)
INPUTS: list[tuple[str, str, np.ndarray]] = [("text", "BYTES", TEXT), ("x", "FP32", X), ("n", "INT64", N)]
#: ... and the outputs the handler answers with.
OUTPUTS = ["text_out", "x_out", "n_out"]


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The client's error type, its status (HTTP code, gRPC status name or the client's own) and message."""
    status: Any = None
    message: Any = None
    if callable(getattr(exc, "status", None)):  # tritonclient's InferenceServerException
        status, message = exc.status(), exc.message()  # type: ignore[attr-defined]
    elif callable(getattr(exc, "code", None)):  # grpc.RpcError
        status, message = str(exc.code()), exc.details()  # type: ignore[attr-defined]
    elif getattr(exc, "response", None) is not None:  # httpx.HTTPStatusError
        status = str(exc.response.status_code)  # type: ignore[attr-defined]
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "status": None if status is None else str(status),
        "message": str(message if message is not None else exc),
        "where": traceback.format_exception(exc)[-3:] if status is None else None,
    }


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return {"ok": fn(*args, **kwargs)}
    except Exception as exc:
        return {"error": describe_error(exc)}


async def attempt_async(coro: Any) -> dict[str, Any]:
    """``attempt`` for a coroutine (kserve's clients are async)."""
    try:
        return {"ok": await coro}
    except Exception as exc:
        return {"error": describe_error(exc)}


def describe_array(array: Any, datatype: str | None = None) -> dict[str, Any]:
    """An ``as_numpy`` result as JSON: dtype, shape, values (bytes as text) and the element type."""
    if array is None:
        return {"datatype": datatype, "dtype": None, "shape": None, "values": None, "element": None}
    flat = array.ravel().tolist()
    element = type(flat[0]).__name__ if flat else None
    values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat]
    return {
        "datatype": datatype,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "values": values,
        "element": element,
    }


def metadata_tensors(tensors: Any) -> list[dict[str, Any]]:
    """Metadata tensors (protobuf messages or JSON objects) as ``{"name", "datatype", "shape"}``."""
    out = []
    for tensor in tensors:
        get = tensor.get if isinstance(tensor, dict) else lambda key, t=tensor: getattr(t, key)
        out.append({"name": get("name"), "datatype": get("datatype"), "shape": [int(d) for d in get("shape")]})
    return out


def emit(report: dict[str, Any]) -> None:
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
