"""Floor (a): a bare ``grpc.aio`` KServe v2 server — ModelInfer and ModelStreamInfer, nothing else.

The generated servicer with the proto's own (de)serialisers, the same echo
and token code as the anyserve app, no routing, no IPC. Prints
``grpc floor ready at HOST:PORT`` once it listens.

    python grpc_floor.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from echo_logic import echo, final_marker, token_count, token_response

from anyserve.protocol import messages as rpc

MAX_MESSAGE = 512 * 1024 * 1024


class Echo(rpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        return echo(request)

    async def ModelStreamInfer(self, request_iterator, context):
        async for request in request_iterator:
            for i in range(token_count(request)):
                yield token_response(request, i)
            yield final_marker(request)


async def main(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    )
    rpc.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"grpc floor ready at {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
