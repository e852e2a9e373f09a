"""Floor (b): a bare HTTP echo — uvicorn and a minimal Starlette app, configured as the router's uvicorn is.

``POST /infer`` takes a serialised ModelInferRequest (``application/x-protobuf``)
and answers the echo in protobuf; ``POST /infer/stream`` answers the same
256-token run as Server-Sent Events, in the router's wire shape. No routing,
no validation, no upstream hop. Prints ``http floor ready at HOST:PORT``.

    python http_floor.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from echo_logic import echo, token_count, token_event_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from anyserve.protocol.messages import ModelInferRequest

PROTOBUF = "application/x-protobuf"
END = b"event: end\ndata: [DONE]\n\n"


async def infer(request: Request) -> Response:
    message = ModelInferRequest.FromString(await request.body())
    return Response(echo(message).SerializeToString(), media_type=PROTOBUF)


async def infer_stream(request: Request) -> Response:
    message = ModelInferRequest.FromString(await request.body())

    async def events():
        for i in range(token_count(message)):
            yield b"data: " + token_event_json(message.model_name, message.id, i) + b"\n\n"
        yield END

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


app = Starlette(
    routes=[Route("/infer", infer, methods=["POST"]), Route("/infer/stream", infer_stream, methods=["POST"])]
)


async def serve(host: str, port: int) -> None:
    # The same uvicorn settings the router's CLI uses (loop/http "auto", no access log).
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"http floor ready at {host}:{bound}", flush=True)
    await task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # The event loop as the router's CLI picks it: uvicorn's "auto" loop factory (uvloop when installed).
    with asyncio.Runner(loop_factory=uvicorn.Config(app).get_loop_factory()) as runner:
        runner.run(serve(args.host, args.port))
