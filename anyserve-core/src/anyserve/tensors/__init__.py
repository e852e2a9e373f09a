"""The tensor codec: Python values <-> KServe v2 tensors, without loss.

``encode_inputs`` fills a ``ModelInferRequest`` from a dict of values;
``decode_outputs`` turns a ``ModelInferResponse`` back into a dict. str,
bytes, bool, int, float, :class:`~anyserve.objects.ObjRef`, nested lists of
them and numpy arrays (numpy is optional) survive the round trip with their
types. Errors are :class:`TensorError` (INVALID_ARGUMENT and ``ValueError``).
"""

from anyserve.protocol.datatypes import (
    CONTENT_TYPE_PARAMETER,
    DATATYPES,
    STR_CONTENT_TYPE,
    TensorError,
)
from anyserve.tensors.decode import decode_inputs, decode_outputs, decode_tensor
from anyserve.tensors.encode import Tensor, encode_inputs, encode_value
from anyserve.tensors.outputs import TensorSpec, as_raw_outputs, encode_outputs
from anyserve.tensors.parameters import decode_parameters, set_parameters

__all__ = [
    "CONTENT_TYPE_PARAMETER",
    "DATATYPES",
    "STR_CONTENT_TYPE",
    "Tensor",
    "TensorError",
    "TensorSpec",
    "as_raw_outputs",
    "decode_inputs",
    "decode_outputs",
    "decode_parameters",
    "decode_tensor",
    "encode_inputs",
    "encode_outputs",
    "encode_value",
    "set_parameters",
]
