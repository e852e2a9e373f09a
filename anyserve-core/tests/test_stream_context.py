import asyncio
import pickle

import pytest

from anyserve import Context, ModelInferResponse, ModelStreamInferResponse, Stream
from anyserve.builtins.memory import MemoryStore
from anyserve.errors import AnyServeError, Cancelled


def test_stream_sends_wraps_and_stops_after_close():
    sent: list[ModelStreamInferResponse] = []
    stream = Stream(sent.append, model_name="chat", request_id="r1")
    stream.send(ModelInferResponse(id="a"))
    stream.send_text("Hello")
    stream.send_text("!", finish_reason="stop")
    stream.error("bad")
    assert sent[0].infer_response.id == "a"
    assert sent[1].infer_response.outputs[0].name == "text_output"
    assert sent[1].infer_response.outputs[0].contents.bytes_contents == [b"Hello"]
    assert sent[2].infer_response.outputs[1].contents.bytes_contents == [b"stop"]
    assert sent[2].infer_response.id == "r1"
    assert sent[3].error_message == "bad"
    stream.close()
    with pytest.raises(Cancelled):
        stream.send_text("late")


def test_drain_waits_for_room_and_refuses_a_closed_stream():
    waited = []

    async def room():
        waited.append(1)

    async def main():
        await Stream([].append).drain()  # no pacing given: nothing to wait for
        stream = Stream([].append, room=room)
        await stream.drain()
        assert waited == [1]
        stream.close()
        with pytest.raises(Cancelled):
            await stream.drain()

    asyncio.run(main())


def test_context_opens_objects_lazily_and_explains_missing_parts():
    opened = []

    def open_store():
        opened.append(1)
        return MemoryStore()

    ctx = Context(replica_id="r", objects=open_store)
    assert opened == []
    ref = ctx.objects.create(b"x")
    assert ctx.objects.get(ref) == b"x"
    assert opened == [1]
    bare = Context()
    with pytest.raises(AnyServeError, match="object store"):
        bare.objects  # noqa: B018
    with pytest.raises(AnyServeError, match="--api-server"):
        bare.call(capability={"type": "embed"}, inputs={})
    assert not bare.cancelled
    bare.cancel()
    assert bare.cancelled


def test_context_call_goes_through_the_caller():
    seen = {}

    def caller(**kwargs):
        seen.update(kwargs)
        return {"out": 1}

    ctx = Context(caller=caller)
    assert ctx.call(capability={"type": "embed"}, inputs={"x": 1}) == {"out": 1}
    assert seen == {"capability": {"type": "embed"}, "inputs": {"x": 1}}


def test_a_missing_object_store_is_a_runtime_error_with_a_precondition_code():
    from anyserve.errors import ObjectStoreNotConfigured, as_anyserve_error

    with pytest.raises(RuntimeError, match="no object store is configured") as caught:
        Context().objects  # noqa: B018
    exc = caught.value
    assert isinstance(exc, ObjectStoreNotConfigured) and isinstance(exc, AnyServeError)
    assert exc.code == "FAILED_PRECONDITION"
    assert as_anyserve_error(exc) is exc  # a handler raising it keeps its code across the transport
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is ObjectStoreNotConfigured and again.message == exc.message
