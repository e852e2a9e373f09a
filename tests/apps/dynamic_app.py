"""Worker classes for the dynamic-worker tests.

Every lifecycle event is appended to the file named by ANYSERVE_TEST_EVENTS
("start <class> <pid>", "cleanup <class> <pid>"), so tests can count starts and
stops from outside the processes. Timings come from the environment.
"""

from __future__ import annotations

import os
import time

from anyserve import AnyServe, ModelInferResponse, Worker

EVENTS = os.environ.get("ANYSERVE_TEST_EVENTS", "")
START_DELAY = float(os.environ.get("ANYSERVE_TEST_START_DELAY", "0.5"))
IDLE = float(os.environ.get("ANYSERVE_TEST_IDLE", "1000"))

app = AnyServe("dynamic")


def record(event: str) -> None:
    if EVENTS:
        with open(EVENTS, "a") as fh:
            fh.write(f"{event} {os.getpid()}\n")


def reply(request, who: str) -> ModelInferResponse:
    response = ModelInferResponse(model_name=request.model_name, id=request.id)
    out = response.outputs.add(name="served_by", datatype="BYTES", shape=[1])
    out.contents.bytes_contents.append(who.encode())
    out.parameters["content_type"].string_param = "str"
    pid = response.outputs.add(name="pid", datatype="INT64", shape=[1])
    pid.contents.int64_contents.append(os.getpid())
    return response


class Model(Worker):
    """One simulated model; the subclasses only differ in name."""

    def on_start(self) -> None:
        time.sleep(START_DELAY)
        record(f"start {type(self).__name__}")

    def on_cleanup(self) -> None:
        record(f"cleanup {type(self).__name__}")

    def handle(self, request, context):
        seconds = request.inputs[0].contents.fp64_contents[0] if request.inputs else 0.0
        time.sleep(seconds)
        if request.parameters.get("crash") is not None:
            os._exit(3)
        return reply(request, type(self).__name__)

    def handle_stream(self, request, context, stream):
        for token in ("loaded", " ", type(self).__name__):
            stream.send_text(token)


@app.worker(capabilities=[{"type": "chat", "model": "small"}], resources={"gpus": 1}, idle_timeout=IDLE,
            max_concurrency=8)  # fmt: skip
class Small(Model):
    pass


@app.worker(capabilities=[{"type": "chat", "model": "medium"}], resources={"gpus": 1}, idle_timeout=IDLE,
            max_concurrency=8)  # fmt: skip
class Medium(Model):
    pass


@app.worker(capabilities=[{"type": "chat", "model": "large"}], resources={"gpus": 2}, idle_timeout=IDLE,
            max_concurrency=8)  # fmt: skip
class Large(Model):
    pass


@app.worker(capabilities=[{"type": "broken"}], resources={"gpus": 1})
class Broken(Worker):
    def on_start(self) -> None:
        raise RuntimeError("weights not found on purpose")

    def handle(self, request, context):
        raise AssertionError("never reached")


@app.capability(type="echo")
def echo(request):
    return reply(request, "plain")
