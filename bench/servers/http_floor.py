"""Floor (b): a bare HTTP echo — uvicorn and a minimal Starlette app, configured as the router's uvicorn is.

``POST /infer`` takes a serialised ModelInferRequest (``application/x-protobuf``)
and answers the echo in protobuf; ``POST /infer/stream`` answers the same
256-token run as Server-Sent Events, in the router's wire shape, for a
protobuf or a KServe v2 JSON request body. ``POST /v2/models/{name}/infer``
is the KServe v2 REST echo (:mod:`json_echo`): JSON in, JSON out, or the
binary tensor extension both ways. No routing, no validation, no upstream
hop. Prints ``http floor ready at HOST:PORT``.

    python http_floor.py --port 0
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

from echo_logic import TOKENS, echo, token_count, token_event_json
from json_echo import v2_infer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn_floor import run

from anyserve.protocol.messages import ModelInferRequest

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
END = b"event: end\ndata: [DONE]\n\n"


async def infer(request: Request) -> Response:
    message = ModelInferRequest.FromString(await request.body())
    return Response(echo(message).SerializeToString(), media_type=PROTOBUF)


async def infer_stream(request: Request) -> Response:
    body = await request.body()
    if request.headers.get("content-type", "").startswith(JSON):
        # A KServe v2 JSON body; the capability header names the model, as the router reads it.
        data = json.loads(body)
        model, request_id = request.headers.get("x-capability-type", ""), data.get("id", "")
        count = int((data.get("parameters") or {}).get("tokens", TOKENS))
    else:
        message = ModelInferRequest.FromString(body)
        model, request_id, count = message.model_name, message.id, token_count(message)

    async def events() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"data: " + token_event_json(model, request_id, i) + b"\n\n"
        yield END

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


app = Starlette(
    routes=[
        Route("/infer", infer, methods=["POST"]),
        Route("/infer/stream", infer_stream, methods=["POST"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
    ]
)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    run(app, args.host, args.port, "http floor")
