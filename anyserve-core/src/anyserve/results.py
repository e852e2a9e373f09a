"""What a client call gives back: a decoded result, or a typed error.

Kept apart from :mod:`anyserve.client` so code that only reads results (a
router relaying them, a handler calling another capability) need not import
the client's transport.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from anyserve.errors import AnyServeError
from anyserve.protocol.messages import ModelInferResponse
from anyserve.tensors import decode_outputs, decode_parameters


class InferenceError(AnyServeError):
    """A call to a replica failed; ``code`` is the gRPC status name (``NOT_FOUND``, ``INTERNAL``, …).

    ``status`` is the same as a :class:`grpc.StatusCode` and ``message`` the
    server's text, which names what went wrong (the query that matched
    nothing, the handler's exception type and message).
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN") -> None:
        super().__init__(message, code=code)

    @property
    def status(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"InferenceError(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> Any:  # stay an InferenceError when pickled
        return (_rebuild, (self.code, self.message))

    @classmethod
    def from_rpc(
        cls, exc: grpc.RpcError, *, endpoint: str = "", method: str = "", timeout: float | None = None
    ) -> InferenceError:
        """The error a failed gRPC call raised, with where it went when the server never answered."""
        status: grpc.StatusCode = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        message = (exc.details() if hasattr(exc, "details") else "") or str(exc)
        if status is grpc.StatusCode.UNAVAILABLE:
            message = f"replica at {endpoint} is unavailable ({method}): {message}"
        elif status is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{method} on {endpoint} did not finish within its {timeout}s timeout: {message}"
        return cls(message, code=status.name)

    @classmethod
    def from_stream_error(cls, text: str) -> InferenceError:
        """A ``ModelStreamInferResponse.error_message`` in the agent's ``"<CODE>: <message>"`` form.

        Servers that write free text (Triton itself) give ``UNKNOWN`` with the whole text.
        """
        code, sep, message = text.partition(": ")
        if sep and code in grpc.StatusCode.__members__:
            return cls(message, code=code)
        return cls(text, code="UNKNOWN")


def _rebuild(code: str, message: str) -> InferenceError:
    return InferenceError(message, code=code)


class InferResult(Mapping[str, Any]):
    """A response's outputs decoded by name, with the raw response at hand.

    ``result["sum"]`` is a nested list shaped like the tensor (or a numpy
    array when the call asked ``as_numpy=True``); ``response`` is the
    ``ModelInferResponse`` as received, for anything the mapping does not say.
    """

    __slots__ = ("_outputs", "parameters", "response")

    def __init__(self, response: ModelInferResponse, *, as_numpy: bool = False) -> None:
        self.response = response
        self._outputs = decode_outputs(response, as_numpy=as_numpy)
        #: Response parameters as Python values.
        self.parameters: dict[str, Any] = decode_parameters(response.parameters)

    @property
    def id(self) -> str:
        return self.response.id

    @property
    def model_name(self) -> str:
        return self.response.model_name

    @property
    def model_version(self) -> str:
        return self.response.model_version

    def __getitem__(self, name: str) -> Any:
        try:
            return self._outputs[name]
        except KeyError:
            raise KeyError(f"no output {name!r} in the response; outputs: {sorted(self._outputs)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def __repr__(self) -> str:
        return f"InferResult(model_name={self.model_name!r}, id={self.id!r}, outputs={self._outputs!r})"
