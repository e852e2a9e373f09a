"""Request, response and tensor parameters as plain Python values.

``InferParameter`` is a oneof; callers should not have to know which arm a
value belongs in, and should get back the type they put in.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from anyserve.protocol.datatypes import TensorError
from anyserve.protocol.messages import InferParameter

_INT64_MAX = 2**63 - 1


def set_parameter(param: InferParameter, value: Any, name: str = "") -> None:
    """Store ``value`` in the arm that keeps its type: bool, int64 (uint64 above), double, string."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        if value < -(2**63) or value > 2**64 - 1:
            raise TensorError(f"parameter {name!r}: integer {value} does not fit int64 or uint64")
        if value > _INT64_MAX:
            param.uint64_param = value
        else:
            param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    elif isinstance(value, str):
        param.string_param = value
    else:
        raise TensorError(
            f"parameter {name!r}: {type(value).__name__} is not a parameter type (use bool, int, float or str)"
        )


def set_parameters(target: MutableMapping[str, InferParameter], values: Mapping[str, Any] | None) -> None:
    for name, value in (values or {}).items():
        set_parameter(target[name], value, name)


def decode_parameter(param: InferParameter) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return None if choice is None else getattr(param, choice)


def decode_parameters(params: Mapping[str, InferParameter]) -> dict[str, Any]:
    return {name: decode_parameter(param) for name, param in params.items()}
