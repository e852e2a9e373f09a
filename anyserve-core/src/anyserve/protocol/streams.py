"""How a run of ``ModelStreamInfer`` responses begins, fails and ends on the wire.

Each request on a stream is answered by its own run of responses; the last
one carries Triton's ``triton_final_response = true`` (empty when the run
ended normally). An error travels as ``error_message`` in the form
``"<CODE>: <message>"`` with a gRPC status name, so a reader gets the same
status the unary call would have given.
"""

from __future__ import annotations

from anyserve.protocol import messages as pb
from anyserve.protocol.names import FINAL_PARAMETER


def is_final(response: pb.ModelInferResponse) -> bool:
    flag = response.parameters.get(FINAL_PARAMETER)  # .get: indexing would add the key
    return flag is not None and flag.bool_param


def final_marker(request_id: str) -> bytes:
    """The empty response that closes one request's run."""
    response = pb.ModelInferResponse(id=request_id)
    response.parameters[FINAL_PARAMETER].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


def final_error(code: str, message: str, request_id: str) -> bytes:
    """An error that also closes the run: no response follows it for this request."""
    response = pb.ModelInferResponse(id=request_id)
    response.parameters[FINAL_PARAMETER].bool_param = True
    return pb.ModelStreamInferResponse(error_message=f"{code}: {message}", infer_response=response).SerializeToString()


def split_error(error_message: str, uncoded: str = "INTERNAL") -> tuple[str, str]:
    """``"<CODE>: <message>"`` as ``(code, message)``; ``uncoded`` with the whole text otherwise.

    Servers other than anyserve (Triton itself) write free text.
    """
    code, sep, message = error_message.partition(": ")
    if sep and code and code.replace("_", "").isalpha() and code.isupper():
        return code, message
    return uncoded, error_message
