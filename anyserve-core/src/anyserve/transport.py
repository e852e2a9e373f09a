"""The contract between a replica's agent and its workers.

A transport moves opaque request bytes (a serialised ``ModelInferRequest``)
from the agent to a worker and response bytes back; it never parses them.
The agent holds one :class:`Connection` per worker; the worker exposes a
:class:`WorkerService` through :meth:`Transport.serve`. Errors cross as
``(code, message)`` and are re-raised with :func:`anyserve.errors.error_for_code`.

Implementations are contributed through ``anyserve_register_transports`` and
verified by :class:`anyserve.testing.TransportContract`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

Query = Mapping[str, str]


@runtime_checkable
class WorkerService(Protocol):
    """What a worker offers; the transport's server side calls into it."""

    def hello(self) -> dict[str, Any]:
        """Handshake data sent to the agent on connect.

        At least ``{"capabilities": [ {...}, ... ], "pid": int}``; each
        capability dict may carry ``"stream": true``.
        """
        ...

    async def infer(self, payload: bytes, query: Query) -> bytes:
        """Serve one unary request; return the serialised ``ModelInferResponse``.

        Raise an :class:`anyserve.errors.AnyServeError` to report a failure
        with a status code; any other exception is reported as INTERNAL with
        its type and message. Cancellation arrives as ``asyncio.CancelledError``.
        """
        ...

    def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        """Serve one streaming request; yield serialised ``ModelStreamInferResponse``s."""
        ...

    # Optional: ``def admit(self, hello: dict[str, Any]) -> None``. A service that has it is asked
    # with the connecting side's hello (what it passed to ``Transport.connect(hello=...)``) before
    # any request is read, and refuses the connection by raising an AnyServeError (e.g.
    # ``Unauthenticated``): the router link admits only callers with the cluster token.
    #
    # Optional: ``def answer_load(self) -> str``. A service that has it is asked, as each answer goes
    # out, for its load as ``"queued,in_flight"``, and a transport that can carries it with the answer;
    # the connection's optional ``answer_load`` attribute holds the latest one. The router link sends the
    # agent's load this way, as gRPC answers carry it in trailing metadata.


@runtime_checkable
class Connection(Protocol):
    """The agent's handle on one worker."""

    #: The handshake dict the worker sent (see :meth:`WorkerService.hello`).
    hello: dict[str, Any]

    @property
    def in_flight(self) -> int:
        """Requests sent on this connection and not finished yet."""
        ...

    @property
    def closed(self) -> bool:
        """True once the worker went away or :meth:`close` was called."""
        ...

    async def infer(self, payload: bytes, query: Query) -> bytes:
        """Send one request and wait for its response bytes.

        Raises the worker's error with its code; ``Unavailable`` when the
        worker dies first. Cancelling the awaiting task cancels the request
        on the worker.
        """
        ...

    def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        """Send one streaming request and iterate over its response bytes.

        Closing the iterator early (``aclose``) cancels the handler.
        """
        ...

    async def close(self) -> None:
        """Close the connection; in-flight requests fail with ``Unavailable``."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Creates worker endpoints and the agent's connections to them."""

    name: str

    def address(self, run_dir: str, worker_id: str) -> str:
        """The address worker ``worker_id`` should serve on, under ``run_dir``."""
        ...

    async def serve(self, address: str, service: WorkerService) -> None:
        """Serve ``service`` at ``address`` until cancelled; clean up on exit."""
        ...

    async def connect(
        self, address: str, *, timeout: float = 10.0, hello: Mapping[str, Any] | None = None
    ) -> Connection:
        """Connect to a worker serving at ``address`` and complete the handshake.

        Waits up to ``timeout`` seconds for the worker to appear. ``hello`` is
        this side's handshake (credentials), given to the service's ``admit``;
        a refusal raises the service's error.
        """
        ...
