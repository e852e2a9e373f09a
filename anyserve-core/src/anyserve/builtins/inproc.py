"""Built-in ``inproc`` transport: handlers run inside the agent process.

No sockets and no copies: the agent awaits the worker service directly. It
is the fastest transport and the reference the contract suite is held to;
the price is that a crashing handler takes the agent with it and
``--workers`` cannot spread load over processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from anyserve.errors import Unavailable, as_anyserve_error
from anyserve.hookspecs import hookimpl
from anyserve.records import TransportSpec
from anyserve.transport import Query, WorkerService

# address -> service being served in this process.
_SERVICES: dict[str, WorkerService] = {}


class InprocConnection:
    def __init__(self, address: str, service: WorkerService) -> None:
        self.address = address
        self._service = service
        self.hello: dict[str, Any] = service.hello()
        self._in_flight = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def closed(self) -> bool:
        return self._closed or _SERVICES.get(self.address) is not self._service

    def _check(self) -> None:
        if self.closed:
            raise Unavailable(f"inproc worker at {self.address} is gone")

    async def infer(self, payload: bytes, query: Query) -> bytes:
        self._check()
        self._in_flight += 1
        try:
            return await self._service.infer(payload, query)
        except Exception as exc:
            raise as_anyserve_error(exc) from exc
        finally:
            self._in_flight -= 1

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        self._check()
        self._in_flight += 1
        try:
            async with contextlib.aclosing(self._service.stream(payload, query)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except Exception as exc:
            raise as_anyserve_error(exc) from exc
        finally:
            self._in_flight -= 1

    async def close(self) -> None:
        self._closed = True


class InprocTransport:
    name = "inproc"

    def address(self, run_dir: str, worker_id: str) -> str:
        return f"inproc://{run_dir}/{worker_id}"

    async def serve(self, address: str, service: WorkerService) -> None:
        if address in _SERVICES:
            raise Unavailable(f"inproc address {address} is already served")
        _SERVICES[address] = service
        try:
            await asyncio.Event().wait()
        finally:
            _SERVICES.pop(address, None)

    async def connect(
        self, address: str, *, timeout: float = 10.0, hello: Mapping[str, Any] | None = None
    ) -> InprocConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while address not in _SERVICES:
            if loop.time() >= deadline:
                raise Unavailable(f"no inproc worker is serving {address} (waited {timeout:g}s)")
            await asyncio.sleep(0.01)
        service = _SERVICES[address]
        admit = getattr(service, "admit", None)
        if admit is not None:
            admit(dict(hello or {}))
        return InprocConnection(address, service)


@hookimpl
def anyserve_register_transports(register):
    register(
        TransportSpec(
            name="inproc",
            factory=lambda options: InprocTransport(),
            description="handlers run inside the agent process (no IPC)",
            in_process=True,
        )
    )
