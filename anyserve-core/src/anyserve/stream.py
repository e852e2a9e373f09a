"""The object a streaming handler sends its responses through."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

from anyserve._proto.grpc_predict_v2_pb2 import ModelInferResponse, ModelStreamInferResponse
from anyserve.errors import Cancelled


def closed() -> Cancelled:
    """What sending on (or draining) a stream whose client has gone raises."""
    return Cancelled("stream closed: the client cancelled or went away")


class Stream:
    """A thin, thread-safe sink for ``ModelStreamInferResponse`` messages.

    The runtime supplies ``sink``; once the client goes away ``send`` raises
    :class:`anyserve.errors.Cancelled`, so a plain-loop handler stops
    producing without checking anything itself. The runtime also paces the
    handler by its reader: in a plain handler ``send`` blocks while the
    reader is behind; an ``async`` handler awaits :meth:`drain`.

    Built without a sink (``Stream()``), it is a standalone FIFO, as the
    original API had it: iterating yields what was sent, in order, and ends
    once :meth:`close` (or :meth:`error`) was called and everything sent
    was taken. One thread may produce while another iterates, so a handler
    can be called directly with one, in a test or a script::

        stream = Stream()
        threading.Thread(target=chat, args=(request, context, stream)).start()
        for response in stream: ...   # the producer ends it with stream.close()
    """

    def __init__(
        self,
        sink: Callable[[ModelStreamInferResponse], None] | None = None,
        *,
        model_name: str = "",
        request_id: str = "",
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._room = room
        self._closed = False
        self.model_name = model_name
        self.request_id = request_id
        #: Standalone only: what was sent and not yet taken, guarded by ``_ready``.
        self._queue: deque[ModelStreamInferResponse] | None = None
        self._ready: threading.Condition | None = None
        if sink is None:
            self._queue = deque()
            self._ready = threading.Condition()
            sink = self._put
        self._sink = sink

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the stream: the runtime calls it when the client went away or the stream ended.

        On a standalone stream the producer calls it, and iteration ends
        after the responses already sent.
        """
        if self._ready is None:
            self._closed = True
            return
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _put(self, response: ModelStreamInferResponse) -> None:
        assert self._queue is not None and self._ready is not None
        with self._ready:  # checked under the lock: nothing lands after the reader saw the end
            if self._closed:
                raise closed()
            self._queue.append(response)
            self._ready.notify()

    def __iter__(self) -> Iterator[ModelStreamInferResponse]:
        """A standalone stream's responses in the order sent; ends after :meth:`close`.

        Blocks while the stream is open and nothing is waiting. A stream the
        runtime built sends to its reader instead, so it cannot be iterated.
        """
        if self._queue is None or self._ready is None:
            raise TypeError("this stream sends to the runtime's reader; only a Stream() built without a sink iterates")
        return self._take(self._queue, self._ready)

    def _take(
        self, queue: deque[ModelStreamInferResponse], ready: threading.Condition
    ) -> Iterator[ModelStreamInferResponse]:
        while True:
            with ready:
                while not queue and not self._closed:
                    ready.wait()
                if not queue:
                    return
                response = queue.popleft()
            yield response

    async def drain(self) -> None:
        """Wait until the reader has caught up enough to take more; call it after ``send`` in an ``async`` handler.

        Without it an ``async`` handler that never waits for anything else
        runs its whole answer into memory before the first response leaves.
        Raises :class:`anyserve.errors.Cancelled` once the client has gone.
        """
        if self._closed:
            raise closed()
        if self._room is not None:
            await self._room()

    def send(self, response: ModelStreamInferResponse | ModelInferResponse) -> None:
        """Send one response; a bare ``ModelInferResponse`` is wrapped for you."""
        if self._closed:
            raise closed()
        if isinstance(response, ModelInferResponse):
            response = ModelStreamInferResponse(infer_response=response)
        self._sink(response)

    def send_text(self, text: str, finish_reason: str | None = None) -> None:
        """Send one token as token streams carry it: BYTES ``text_output``, and ``finish_reason`` when given."""
        infer = ModelInferResponse(model_name=self.model_name, id=self.request_id)
        out = infer.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(text.encode())
        if finish_reason is not None:
            fin = infer.outputs.add(name="finish_reason", datatype="BYTES", shape=[1])
            fin.contents.bytes_contents.append(finish_reason.encode())
        self.send(infer)

    def error(self, message: str) -> None:
        """Send an error response; the stream ends after it (the runtime's reader stops there)."""
        self.send(ModelStreamInferResponse(error_message=message))
        if self._queue is not None:
            self.close()
