"""The request's deadline in the worker: ``context.deadline``, ``context.cancelled``, and liveness probes.

These drive a real ``WorkerHost`` (the worker side of every transport) with
the frame map the agent sends: ``x-request-timeout`` carries what is left.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from anyserve import AnyServe, ModelInferRequest, ModelInferResponse
from anyserve.builtins.subset import SubsetMatcher
from anyserve.errors import DeadlineExceeded
from anyserve.protocol import names
from anyserve.replica.worker import WorkerHost
from anyserve.tensors import decode_outputs

PAYLOAD = ModelInferRequest(model_name="x", id="r1").SerializeToString()
LONG = {"x-capability-type": "long", names.TIMEOUT_KEY: "0.1"}
ran: list[str] = []


def outputs(raw: bytes) -> dict:
    return decode_outputs(ModelInferResponse.FromString(raw))


def host() -> WorkerHost:
    app = AnyServe("deadlines")

    @app.capability(type="left")
    def left(request, context):
        ran.append("left")
        return {"left": [context.time_remaining() or -1.0], "cancelled": [context.cancelled]}

    @app.capability(type="until-late")
    def until_late(request, context):
        until = time.monotonic() + 10
        while not context.cancelled and time.monotonic() < until:
            time.sleep(0.01)
        ran.append("stopped by the deadline" if time.monotonic() < until else "ran its course")
        return {"too": ["late"]}

    @app.capability(type="long", stream=True)
    async def long(request, context, stream):
        stream.send_text("first")
        await asyncio.sleep(0.3)  # past the deadline, which bounded the first response only
        stream.send_text("cancelled" if context.cancelled else "still running")

    return WorkerHost(app, SubsetMatcher())


def test_the_handler_sees_the_deadline_and_is_told_when_it_passes() -> None:
    worker = host()

    async def main() -> None:
        answer = outputs(await worker.infer(PAYLOAD, {"x-capability-type": "left", names.TIMEOUT_KEY: "5"}))
        assert 4.0 < answer["left"][0] <= 5.0 and answer["cancelled"] == [False]
        # Told at the deadline, the handler stops; what it returns then is too late for the caller, who has
        # given up: the answer is the deadline's error, never a result racing the caller's own timeout.
        with pytest.raises(DeadlineExceeded, match="deadline passed while its handler ran"):
            await worker.infer(PAYLOAD, {"x-capability-type": "until-late", names.TIMEOUT_KEY: "0.1"})
        assert ran[-1] == "stopped by the deadline"

    asyncio.run(main())


def test_a_streams_deadline_is_lifted_once_its_first_response_is_out() -> None:
    worker = host()

    async def main() -> list[bytes]:
        return [chunk async for chunk in worker.stream(PAYLOAD, LONG)]

    chunks = asyncio.run(main())
    assert b"still running" in chunks[-1] and b"first" in chunks[0]


def test_a_liveness_probe_is_answered_without_running_a_handler() -> None:
    worker = host()
    ran.clear()
    assert asyncio.run(worker.infer(b"", {names.PROBE_KEY: "1"})) == b""
    assert ran == []
