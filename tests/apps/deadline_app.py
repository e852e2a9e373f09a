"""Handlers for the deadline, cancellation, liveness and transient-state tests.

The slow handlers say how they ended in the file their request names
(parameter ``marker``), so a test sees the cancellation reach the worker.
"""

from __future__ import annotations

import asyncio
import os
import time

from anyserve import AnyServe, Worker
from anyserve.llm import ChatRequest

app = AnyServe("deadlines")


def _marker(request) -> str:
    return request.parameters["marker"].string_param if "marker" in request.parameters else ""


def write_marker(path: str, text: str) -> None:
    if path:
        with open(path + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)


@app.capability(type="echo")
def echo(request, context):
    """Its worker's pid, and the seconds its deadline left the handler (-1: none)."""
    left = context.time_remaining()
    return {"pid": [os.getpid()], "left": [-1.0 if left is None else left]}


@app.capability(type="slow")
def slow(request, context):
    """Runs up to 30 s in small steps, stopping when ``context.cancelled`` turns true."""
    until = time.monotonic() + 30
    while time.monotonic() < until:
        if context.cancelled:
            write_marker(_marker(request), "cancelled")
            return {"done": [0]}
        time.sleep(0.01)
    write_marker(_marker(request), "finished")
    return {"done": [1]}


@app.capability(type="slow-async")
async def slow_async(request, context):
    """Sleeps 30 s unless cancelled, which an ``async def`` handler sees as ``CancelledError``."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        write_marker(_marker(request), "cancelled")
        raise
    write_marker(_marker(request), "finished")
    return {"done": [1]}


@app.capability(type="crash")
def crash(request):
    """Takes its worker down, as a request that trips a native crash would."""
    os._exit(3)


@app.chat(model="tiny")
def chat(request: ChatRequest):
    yield "hello"


@app.worker(capabilities=[{"type": "broken"}])
class Broken(Worker):
    """A worker class whose start always fails: three failures make it ``failed`` for a while."""

    def on_start(self) -> None:
        raise RuntimeError("weights not found on purpose")

    def handle(self, request, context):
        raise AssertionError("never reached")
