"""``Client``: call a replica over KServe v2 gRPC with plain Python values.

Direct mode (``Client(endpoint="host:port")``) talks to one replica on a
synchronous gRPC channel; the capability a call asks for travels as
``x-capability-<key>`` metadata, so the agent routes without parsing the
request. Values go through :mod:`anyserve.tensors`, so what a handler echoes
comes back with the type it was sent with. Discovery mode
(``Client(api_server="http://router", capability={...})``) asks the router
which replica serves the capability, talks to that replica directly, and
looks again once when the replica disappears.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc

from anyserve.capability import normalize_key, normalize_value
from anyserve.errors import InvalidRequest
from anyserve.protocol import is_final
from anyserve.protocol import messages as pb
from anyserve.protocol.messages import GRPCInferenceServiceStub
from anyserve.protocol.names import CAPABILITY_KEY
from anyserve.results import InferenceError, InferResult
from anyserve.router_client import RouterClient
from anyserve.tensors import encode_inputs, set_parameters

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Client", "InferResult", "InferenceError"]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def capability_metadata(capability: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A capability query as gRPC metadata, normalised the way replicas compare it.

    gRPC metadata carries lower-case ASCII keys and printable ASCII values;
    anything else is refused here with the offending key named, rather than
    by gRPC with a message that names nothing.
    """
    metadata = []
    for key, value in (capability or {}).items():
        name, text = normalize_key(key), normalize_value(value)
        if not name or not set(name) <= _KEY_CHARS:
            raise InvalidRequest(f"capability key {key!r} must be ASCII letters, digits, '_', '-' or '.'")
        if not text.isascii() or not text.isprintable():
            raise InvalidRequest(f"capability {name}={text!r}: gRPC metadata values must be printable ASCII")
        metadata.append((CAPABILITY_KEY + name, text))
    return metadata


def build_request(
    model_name: str,
    inputs: Mapping[str, Any] | None,
    *,
    parameters: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
    model_version: str = "",
    raw: bool | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest from plain Python values (shared with ``context.call``)."""
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version, id=request_id or "")
    encode_inputs(request, inputs or {}, raw=raw)
    set_parameters(request.parameters, parameters)
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def _as_text(value: Any) -> str:
    """A ``text_output`` value (usually one element) as one string."""
    elements = value if isinstance(value, list) else [value]
    return "".join(e.decode("utf-8") if isinstance(e, bytes) else str(e) for e in elements)


class Client:
    """A connection to one replica; thread-safe, reuse it for many calls.

    ``capability`` is the default query for calls that give none; with
    neither, the replica derives the query from ``model_name`` (-> ``type``)
    and ``model_version`` (-> ``model``). ``timeout`` (seconds) is the default
    deadline of every call; ``None`` waits as long as the call takes.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_server: str | None = None,
        capability: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.capability = dict(capability) if capability else None
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._router: RouterClient | None = None
        if api_server is not None:
            # Discovery: ask the router which replica serves the capability, then talk to it directly.
            self._router = RouterClient(api_server)
            self.replica_id, endpoint = self._router.lookup(self.capability or {})
        elif not endpoint:
            raise InvalidRequest("Client needs endpoint='host:port' (a replica) or api_server='http://router'")
        self._connect(endpoint)

    def _connect(self, endpoint: str) -> None:
        self.endpoint = endpoint
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(endpoint, options=options)
        self._stub = GRPCInferenceServiceStub(self._channel)

    def _rediscover(self, error: InferenceError) -> bool:
        """After UNAVAILABLE in discovery mode: look the replica up again (once per call)."""
        if self._router is None or error.code != "UNAVAILABLE":
            return False
        self._channel.close()
        self.replica_id, endpoint = self._router.lookup(self.capability or {})
        self._connect(endpoint)
        return True

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()
        if self._router is not None:
            self._router.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r})"

    # -- plumbing ------------------------------------------------------------------

    def _call_options(self, capability: Mapping[str, Any] | None, timeout: float | None) -> dict[str, Any]:
        query = capability if capability is not None else self.capability
        return {"timeout": timeout if timeout is not None else self.timeout, "metadata": capability_metadata(query)}

    def _error(self, exc: grpc.RpcError, method: str, timeout: float | None) -> InferenceError:
        error = InferenceError.from_rpc(exc, endpoint=self.endpoint, method=method, timeout=timeout)
        if error.code == "RESOURCE_EXHAUSTED" and "message larger than max" in error.message:
            # gRPC's own limit on this channel, not the replica's: say which knob it is
            error.message += f" (this client's limit, Client(max_message_bytes={self.max_message_bytes}))"
        return error

    # -- inference -----------------------------------------------------------------

    def infer(
        self,
        model_name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        capability: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
        request_id: str | None = None,
        model_version: str = "",
        raw: bool | None = None,
        as_numpy: bool = False,
    ) -> InferResult:
        """One request, one response, decoded by output name.

        ``raw=True`` sends inputs as raw contents (``None``: only when one needs
        it, FP16). Failures raise :class:`InferenceError` with the gRPC status.
        """
        request = build_request(
            model_name, inputs, parameters=parameters, outputs=outputs, request_id=request_id,
            model_version=model_version, raw=raw,
        )  # fmt: skip
        options = self._call_options(capability, timeout)
        for attempt in (1, 2):
            try:
                response = self._stub.ModelInfer(request, **options)
                break
            except grpc.RpcError as exc:
                error = self._error(exc, "ModelInfer", options["timeout"])
                if attempt == 2 or not self._rediscover(error):
                    raise error from None
        return InferResult(response, as_numpy=as_numpy)

    def stream(
        self,
        model_name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        capability: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        model_version: str = "",
        raw: bool | None = None,
        as_numpy: bool = False,
    ) -> Iterator[InferResult]:
        """Each response of a streaming handler, as it arrives.

        Sends one request on ``ModelStreamInfer`` and half-closes: plain server
        streaming over the bidirectional method. The run's closing marker is not
        yielded; an error response raises :class:`InferenceError`. Leaving the
        loop early cancels the call, which stops the handler.
        """
        request = build_request(
            model_name, inputs, parameters=parameters, outputs=None, request_id=request_id,
            model_version=model_version, raw=raw,
        )  # fmt: skip
        # Bad inputs or capability fail here, at the call, not at the first next().
        options = self._call_options(capability, timeout)
        return self._responses(request, options, as_numpy)

    def _responses(
        self, request: pb.ModelInferRequest, options: dict[str, Any], as_numpy: bool
    ) -> Iterator[InferResult]:
        call = self._stub.ModelStreamInfer(iter([request]), **options)
        try:
            for message in call:
                if message.error_message:
                    raise InferenceError.from_stream_error(message.error_message)
                response = message.infer_response
                final = is_final(response)
                if response.outputs or not final:
                    yield InferResult(response, as_numpy=as_numpy)
                if final:
                    return
        except grpc.RpcError as exc:
            raise self._error(exc, "ModelStreamInfer", options["timeout"]) from None
        finally:
            call.cancel()  # a no-op once the call has finished

    def stream_text(
        self,
        model_name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        output: str = "text_output",
        **kwargs: Any,
    ) -> Iterator[str]:
        """Just the text of each streamed response: its ``text_output`` (what ``Stream.send_text`` writes)."""
        for result in self.stream(model_name, inputs, **kwargs):
            if output in result:
                yield _as_text(result[output])

    # -- health and metadata -----------------------------------------------------

    def _probe(self, method: str, request: Any, field: str, **kwargs: Any) -> bool:
        options = self._call_options(kwargs.get("capability"), kwargs.get("timeout"))
        try:
            return bool(getattr(getattr(self._stub, method)(request, **options), field))
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return False  # a probe's answer for a replica that does not answer
            raise self._error(exc, method, options["timeout"]) from None

    def is_alive(self, *, timeout: float | None = None) -> bool:
        """ServerLive; False when the replica cannot be reached."""
        return self._probe("ServerLive", pb.ServerLiveRequest(), "live", timeout=timeout)

    def is_ready(self, *, timeout: float | None = None) -> bool:
        """ServerReady; False when the replica cannot be reached."""
        return self._probe("ServerReady", pb.ServerReadyRequest(), "ready", timeout=timeout)

    def is_model_ready(
        self,
        name: str,
        version: str = "",
        *,
        capability: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Whether the replica serves ``name`` (as ``type``), or ``capability`` when given."""
        request = pb.ModelReadyRequest(name=name, version=version)
        return self._probe("ModelReady", request, "ready", capability=capability, timeout=timeout)

    def server_metadata(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The replica's name, version and protocol extensions."""
        options = self._call_options(None, timeout)
        try:
            response = self._stub.ServerMetadata(pb.ServerMetadataRequest(), **options)
        except grpc.RpcError as exc:
            raise self._error(exc, "ServerMetadata", options["timeout"]) from None
        return {"name": response.name, "version": response.version, "extensions": list(response.extensions)}
