"""A worker in its own process: serves anyserve's ContractService on a unix socket.

Usage: python _worker.py SOCKET_PATH. Used by test_worker_crash.py.
"""

from __future__ import annotations

import asyncio
import sys

from anyserve.testing.transport import ContractService
from anyserve_transport_unix import UnixTransport


async def main(address: str) -> None:
    await UnixTransport().serve(address, ContractService())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
