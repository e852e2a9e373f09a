"""``Stream()`` on its own: a FIFO a handler can be driven with, outside any replica."""

from __future__ import annotations

import threading

import pytest

from anyserve import ModelInferResponse, ModelStreamInferResponse, Stream
from anyserve.errors import Cancelled


def test_yields_what_was_sent_in_order_and_ends_after_close():
    stream = Stream()
    stream.send(ModelStreamInferResponse(infer_response=ModelInferResponse(id="a")))
    stream.send(ModelInferResponse(id="b"))  # wrapped, as with the runtime's sink
    stream.send_text("c")
    stream.close()
    got = list(stream)
    assert [r.infer_response.id for r in got[:2]] == ["a", "b"]
    assert got[2].infer_response.outputs[0].contents.bytes_contents == [b"c"]
    assert list(stream) == []  # taken once; still ended
    with pytest.raises(Cancelled):
        stream.send_text("late")


def test_error_sends_an_error_response_and_ends_the_stream():
    stream = Stream()
    stream.send_text("partial")
    stream.error("model crashed")
    got = list(stream)
    assert [r.error_message for r in got] == ["", "model crashed"]
    assert stream.closed


def test_a_producer_thread_and_a_consumer_see_every_response_in_order():
    stream = Stream(model_name="chat", request_id="r7")
    count = 5000

    def produce() -> None:
        for i in range(count):
            stream.send_text(str(i))
        stream.close()

    producer = threading.Thread(target=produce)
    producer.start()
    texts = [r.infer_response.outputs[0].contents.bytes_contents[0].decode() for r in stream]
    producer.join(timeout=10)
    assert texts == [str(i) for i in range(count)]


def test_iteration_waits_for_the_producer():
    stream = Stream()
    release = threading.Event()

    def produce() -> None:
        release.wait(5)
        stream.send_text("late but there")
        stream.close()

    threading.Thread(target=produce).start()
    taken: list[ModelStreamInferResponse] = []
    consumer = threading.Thread(target=lambda: taken.extend(stream))
    consumer.start()
    consumer.join(timeout=0.2)
    assert consumer.is_alive() and taken == []  # open and empty: it waits, it does not end
    release.set()
    consumer.join(timeout=5)
    assert len(taken) == 1


def test_a_stream_with_a_sink_sends_there_and_does_not_iterate():
    sent: list[ModelStreamInferResponse] = []
    stream = Stream(sent.append)
    stream.send_text("x")
    stream.error("bad")
    assert [r.error_message for r in sent] == ["", "bad"]
    assert not stream.closed  # the runtime, not error(), ends a runtime stream
    with pytest.raises(TypeError, match="without a sink"):
        iter(stream)
