"""A no-compute OpenAI-compatible engine server: what a router adds to the first token, with nothing else in it.

The shape of llama.cpp's ``llama-server`` as routers see it: ``GET /health``,
``GET /v1/models`` (one model) and ``POST /v1/chat/completions``, streamed
(Server-Sent Events of ``chat.completion.chunk``, a usage chunk when
``stream_options.include_usage``, then ``[DONE]``) or not. It generates
``max_tokens`` one-word tokens at once, so a client's time to first token
through a router, less the same straight to this server, is the router's own.
uvicorn and a minimal Starlette app, configured as the router's uvicorn is.
Prints ``openai floor ready at HOST:PORT``.

    python openai_floor.py --port 0 --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn_floor import run

MODEL = "smollm2-135m"


def chunk(request_id: str, created: int, delta: dict[str, str], finish: str | None) -> bytes:
    body = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})


async def chat(request: Request) -> Response:
    data = json.loads(await request.body())
    count = int(data.get("max_tokens") or 16)
    prompt = sum(len(str(m.get("content", ""))) for m in data.get("messages", [])) // 4
    usage = {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}
    request_id, created = f"chatcmpl-{time.monotonic_ns()}", int(time.time())
    if not data.get("stream"):
        message = {"role": "assistant", "content": " word" * count}
        return JSONResponse(
            {
                "id": request_id,
                "object": "chat.completion",
                "created": created,
                "model": MODEL,
                "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                "usage": usage,
            }
        )
    with_usage = bool((data.get("stream_options") or {}).get("include_usage"))

    async def events() -> AsyncIterator[bytes]:
        yield chunk(request_id, created, {"role": "assistant", "content": ""}, None)
        for i in range(count):
            yield chunk(request_id, created, {"content": " word"}, "length" if i == count - 1 else None)
        if with_usage:
            body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": MODEL,
                    "choices": [], "usage": usage}  # fmt: skip
            yield b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


app = Starlette(
    routes=[
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ]
)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=MODEL, help="the model id it serves (default smollm2-135m)")
    args = parser.parse_args()
    MODEL = args.model
    run(app, args.host, args.port, "openai floor")
