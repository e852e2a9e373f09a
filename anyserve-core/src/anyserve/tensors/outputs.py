"""What a handler returns -> a ``ModelInferResponse``, in the form the client reads.

A handler may return a hand-built ``ModelInferResponse`` or a plain mapping
of output name to value (list, numpy array, bytes, str, number). The
datatype of each value is inferred as :func:`~anyserve.tensors.encode_value`
does, or taken from the handler's declared outputs
(``@app.capability(..., outputs=[("sum", "INT32", [-1])])``).

A request that came with raw contents is answered with raw contents, as
Triton does: Triton's clients read ``raw_output_contents`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from anyserve.protocol import messages as pb
from anyserve.protocol.datatypes import BYTES, DATATYPES, TensorError, lookup, pack_raw
from anyserve.tensors.encode import Tensor, encode_value, place


class TensorSpec(NamedTuple):
    """A tensor a handler declares: name, KServe datatype and shape (``-1`` for any length)."""

    name: str
    datatype: str
    shape: tuple[int, ...] = (-1,)

    @classmethod
    def of(cls, spec: Any, where: str) -> TensorSpec:
        """A spec from a ``TensorSpec``, a ``(name, datatype[, shape])`` tuple or a dict of those keys."""
        if isinstance(spec, Mapping):
            spec = (spec.get("name"), spec.get("datatype"), spec.get("shape", (-1,)))
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise TypeError(f"{where}: a tensor is (name, datatype[, shape]) or a dict of those keys, got {spec!r}")
        name, datatype, *rest = spec
        shape = tuple(rest[0]) if rest else (-1,)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: tensor name must be a non-empty string, got {name!r}")
        if datatype not in DATATYPES:
            raise TypeError(f"{where}: tensor {name!r} has datatype {datatype!r}; use one of {', '.join(DATATYPES)}")
        if not all(type(d) is int and d >= -1 for d in shape):
            raise TypeError(f"{where}: tensor {name!r} shape must be integers (-1 for any size), got {list(shape)}")
        return cls(name, datatype, shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def tensor_specs(specs: Iterable[Any] | None, where: str) -> tuple[TensorSpec, ...]:
    out = tuple(TensorSpec.of(s, where) for s in specs or ())
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise TypeError(f"{where}: tensor names repeat: {names}")
    return out


def _as_declared(tensor: Tensor, datatype: str, name: str) -> Tensor:
    """``tensor`` converted to the declared ``datatype``; refuses what would change a value's kind."""
    if tensor.datatype == datatype or (tensor.datatype == BYTES and datatype == BYTES):
        return tensor
    have, want = lookup(tensor.datatype), lookup(datatype)
    if BYTES in (tensor.datatype, datatype) or (have.kind == "bool") != (want.kind == "bool"):
        raise TensorError(f"output {name!r} is declared {datatype} but the handler returned {tensor.datatype} values")
    values = tensor.values
    if not isinstance(values, list):  # numpy: let numpy convert
        return Tensor(datatype, tensor.shape, values.astype(want.numpy), {})
    if want.kind == "int":
        if any(float(v) != int(v) for v in values):
            raise TensorError(f"output {name!r} is declared {datatype} but holds non-integer values")
        values = [int(v) for v in values]
        low, high = want.bounds or (0, 0)
        if values and not (low <= min(values) and max(values) <= high):
            raise TensorError(f"output {name!r}: a value is out of range for {datatype} ({low}..{high})")
    elif want.kind == "float":
        values = [float(v) for v in values]
    return Tensor(datatype, tensor.shape, values, {})


def encode_outputs(
    outputs: Mapping[str, Any],
    *,
    declared: Sequence[TensorSpec] = (),
    request: pb.ModelInferRequest | None = None,
) -> pb.ModelInferResponse:
    """A response holding ``outputs``; raw contents when ``request`` came raw (or a value needs it)."""
    types = {spec.name: spec.datatype for spec in declared}
    tensors = []
    for name, value in outputs.items():
        if not isinstance(name, str) or not name:
            raise TensorError(f"output names must be non-empty strings, got {name!r}")
        tensor = encode_value(value, name)
        if name in types:
            tensor = _as_declared(tensor, types[name], name)
        tensors.append((name, tensor))
    raw = bool(request is not None and request.raw_input_contents) or any(
        lookup(t.datatype).field is None for _, t in tensors
    )
    response = pb.ModelInferResponse()
    place(tensors, response.outputs, response.raw_output_contents, raw=raw)
    return response


def as_raw_outputs(response: pb.ModelInferResponse) -> None:
    """Move typed output contents into ``raw_output_contents`` (in place), as a raw request expects.

    A response that already uses raw contents, or holds an output whose
    datatype anyserve does not know, is left as it is.
    """
    if response.raw_output_contents or not response.outputs:
        return
    blobs = []
    for tensor in response.outputs:
        dt = DATATYPES.get(tensor.datatype)
        if dt is None or dt.field is None:
            return
        blobs.append(pack_raw(dt, getattr(tensor.contents, dt.field)))
    for tensor in response.outputs:
        tensor.ClearField("contents")
    response.raw_output_contents.extend(blobs)
