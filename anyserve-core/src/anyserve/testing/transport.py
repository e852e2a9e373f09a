"""The transport contract: what the agent may rely on from any IPC transport.

The worker side is :class:`ContractService`, a scripted stand-in for a real
worker: these tests are about carrying frames, not about running handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from anyserve.errors import AnyServeError, CapabilityNotFound, Unavailable
from anyserve.transport import Connection, Query, Transport

TIMEOUT = 10.0


class ContractService:
    """A scripted worker service. The payload says what to do:

    ``b"raise"`` raises ValueError; ``b"notfound"`` raises CapabilityNotFound;
    ``b"sleep:<s>[:<tag>]"`` sleeps then echoes; ``b"block"`` waits until cancelled;
    anything else is echoed back followed by the query. Streams yield
    ``count`` chunks (``b"<n>:<count>"``), ``b"forever"`` yields until
    cancelled, ``b"fail:<n>"`` raises after ``n`` chunks.
    """

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def hello(self) -> dict[str, Any]:
        return {"capabilities": [{"type": "echo"}, {"type": "chat", "stream": True}], "pid": os.getpid()}

    async def infer(self, payload: bytes, query: Query) -> bytes:
        if payload == b"raise":
            raise ValueError("boom")
        if payload == b"notfound":
            raise CapabilityNotFound("nothing offers type=missing")
        if payload.startswith(b"sleep:"):
            await asyncio.sleep(float(payload.split(b":")[1]))
        if payload == b"block":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        tail = ",".join(f"{k}={v}" for k, v in sorted(query.items())).encode()
        return payload + b"|" + tail

    async def stream(self, payload: bytes, query: Query) -> AsyncIterator[bytes]:
        self.started.set()
        try:
            if payload == b"forever":
                n = 0
                while True:
                    yield str(n).encode()
                    n += 1
                    await asyncio.sleep(0.005)
            if payload.startswith(b"fail:"):
                for n in range(int(payload[5:])):
                    yield str(n).encode()
                raise RuntimeError("stream broke")
            count = int(payload)
            for n in range(count):
                yield f"{n}:{count}".encode()
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise


class TransportContract:
    """Subclass in a transport's tests and provide the ``transport`` fixture."""

    @pytest.fixture
    def transport(self) -> Transport:
        raise NotImplementedError("provide a `transport` fixture returning the transport under test")

    @pytest.fixture
    def run_dir(self) -> Any:
        # Short path: Unix socket paths are limited to ~100 bytes.
        path = tempfile.mkdtemp(prefix="as-")
        yield path
        shutil.rmtree(path, ignore_errors=True)

    def run(
        self,
        transport: Transport,
        run_dir: str,
        scenario: Callable[[Connection, ContractService], Awaitable[None]],
    ) -> ContractService:
        """Serve a ContractService, connect to it, run ``scenario``, tear down."""
        service = ContractService()

        async def main() -> None:
            address = transport.address(run_dir, "w0")
            server = asyncio.create_task(transport.serve(address, service))
            try:
                conn = await transport.connect(address, timeout=TIMEOUT)
                try:
                    await asyncio.wait_for(scenario(conn, service), TIMEOUT)
                finally:
                    await conn.close()
            finally:
                server.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await server

        asyncio.run(main())
        return service

    def test_is_a_transport(self, transport: Transport) -> None:
        assert isinstance(transport, Transport)
        assert transport.name

    def test_handshake_carries_capabilities(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            assert conn.hello["capabilities"] == service.hello()["capabilities"]
            assert conn.hello["pid"] == os.getpid()

        self.run(transport, run_dir, scenario)

    def test_unary_round_trip_keeps_bytes_and_query(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            assert await conn.infer(b"hi", {"type": "echo", "model": "m1"}) == b"hi|model=m1,type=echo"
            assert await conn.infer(b"", {}) == b"|"
            big = os.urandom(8 * 1024 * 1024)
            assert await conn.infer(big, {}) == big + b"|"

        self.run(transport, run_dir, scenario)

    def test_many_requests_in_flight_on_one_connection(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            # Different delays make answers come back out of order.
            payloads = [f"sleep:{0.001 * (i % 7)}:{i}".encode() for i in range(50)]
            calls = [asyncio.create_task(conn.infer(p, {})) for p in payloads]
            await asyncio.sleep(0)
            peak = conn.in_flight
            results = await asyncio.gather(*calls)
            assert peak > 1
            assert [r.split(b"|")[0] for r in results] == payloads
            assert conn.in_flight == 0

        self.run(transport, run_dir, scenario)

    def test_errors_keep_code_and_message(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            with pytest.raises(AnyServeError) as info:
                await conn.infer(b"raise", {})
            assert info.value.code == "INTERNAL"
            assert "ValueError" in info.value.message and "boom" in info.value.message
            with pytest.raises(AnyServeError) as info:
                await conn.infer(b"notfound", {})
            assert info.value.code == "NOT_FOUND"
            assert "type=missing" in info.value.message
            assert await conn.infer(b"after", {}) == b"after|"

        self.run(transport, run_dir, scenario)

    def test_stream_yields_chunks_in_order(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            got = [chunk async for chunk in conn.stream(b"5", {})]
            assert got == [f"{n}:5".encode() for n in range(5)]
            assert [chunk async for chunk in conn.stream(b"0", {})] == []
            assert conn.in_flight == 0

        self.run(transport, run_dir, scenario)

    def test_stream_error_ends_the_stream(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            got: list[bytes] = []
            with pytest.raises(AnyServeError) as info:
                async for chunk in conn.stream(b"fail:2", {}):
                    got.append(chunk)
            assert got == [b"0", b"1"]
            assert "RuntimeError" in info.value.message and "stream broke" in info.value.message
            assert await conn.infer(b"ok", {}) == b"ok|"

        self.run(transport, run_dir, scenario)

    def test_cancelling_a_request_cancels_the_handler(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            call = asyncio.create_task(conn.infer(b"block", {}))
            await asyncio.wait_for(service.started.wait(), TIMEOUT)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.wait_for(service.cancelled.wait(), TIMEOUT)
            assert await conn.infer(b"still", {}) == b"still|"

        self.run(transport, run_dir, scenario)

    def test_closing_a_stream_early_stops_the_handler(self, transport: Transport, run_dir: str) -> None:
        async def scenario(conn: Connection, service: ContractService) -> None:
            chunks = conn.stream(b"forever", {})
            assert await anext(chunks) == b"0"
            await chunks.aclose()  # type: ignore[attr-defined]
            await asyncio.wait_for(service.cancelled.wait(), TIMEOUT)
            assert await conn.infer(b"still", {}) == b"still|"

        self.run(transport, run_dir, scenario)

    def test_connect_gives_up_when_nobody_serves(self, transport: Transport, run_dir: str) -> None:
        async def main() -> None:
            with pytest.raises(Unavailable):
                await transport.connect(transport.address(run_dir, "nobody"), timeout=0.3)

        asyncio.run(main())
