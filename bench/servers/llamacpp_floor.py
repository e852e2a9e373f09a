"""Floor for the in-replica llama.cpp plugin: its engine behind a bare OpenAI endpoint, nothing else.

The same ``Engine`` object the plugin's worker runs (``anyserve_engine_llamacpp``:
llama-cpp-python, the GGUF's chat template, one generation at a time),
loaded from the same ``ANYSERVE_LLAMACPP_*`` settings, served by uvicorn and
a minimal Starlette app: ``POST /v1/chat/completions`` (streamed or not),
``GET /v1/models`` and ``GET /health``. No router, no agent, no worker hop.
The request and chunk bodies are the ones the router writes
(``anyserve.protocol.openai``), so load generators see the same bytes.
llama-cpp-python's own server cannot be the floor: it hands guidellm's
content parts (``[{"type": "text", ...}]``) to the chat template as a list,
which SmolLM2's template cannot render. Prints ``llamacpp floor ready at
HOST:PORT``.

    python llamacpp_floor.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from anyserve.llm import Delta
from anyserve.protocol import dumps
from anyserve.protocol import openai as protocol
from anyserve.protocol import openai_bodies as bodies
from anyserve_engine_llamacpp.engine import Engine
from anyserve_engine_llamacpp.model import settings_from_env

DONE = b"data: [DONE]\n\n"
_END = object()


def build(engine: Engine, model: str) -> Starlette:
    async def chat(request: Request) -> Response:
        call = protocol.read_chat(await request.body(), f"chatcmpl-{time.monotonic_ns():x}")
        created = int(time.time())
        # llama.cpp generates in a thread; its pieces reach the event loop through a queue.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def generate() -> None:
            try:
                for piece in engine.chat(call.typed):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        loop.run_in_executor(None, generate)

        async def pieces() -> AsyncIterator[Delta]:
            while (piece := await queue.get()) is not _END:
                yield piece if isinstance(piece, Delta) else Delta(text=str(piece))

        if not call.stream:
            text, last = [], Delta()
            async for delta in pieces():
                text.append(delta.text or "")
                last = delta
            joined = Delta(text="".join(text), finish_reason=last.finish_reason, usage=last.usage)
            return Response(dumps(bodies.chat_completion(call.typed.id, created, model, joined)),
                            media_type="application/json")  # fmt: skip

        async def events() -> AsyncIterator[bytes]:
            first, usage = True, None
            async for delta in pieces():
                usage = delta.usage or usage
                chunk = bodies.chat_chunk(call.typed.id, created, model, delta, first=first, with_usage=False)
                yield bodies.sse(chunk)
                first = False
            if call.include_usage and usage is not None:
                yield bodies.sse(bodies.usage_chunk(call.typed.id, created, model, "chat.completion.chunk", usage))
            yield DONE

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse(bodies.model_list([model]))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model-name", default="smollm2-135m", help="the model id clients ask for")
    args = parser.parse_args()
    settings = settings_from_env()
    engine = Engine.load(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(build(engine, args.model_name), loop="auto", http="httptools", log_level="warning")
    server = uvicorn.Server(config)
    print(f"llamacpp floor ready at 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
