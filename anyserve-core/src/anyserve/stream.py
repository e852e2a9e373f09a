"""The object a streaming handler sends its responses through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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
    """

    def __init__(
        self,
        sink: Callable[[ModelStreamInferResponse], None],
        *,
        model_name: str = "",
        request_id: str = "",
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sink = sink
        self._room = room
        self._closed = False
        self.model_name = model_name
        self.request_id = request_id

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Called by the runtime when the client cancelled or the stream ended."""
        self._closed = True

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
        """Send one token in the seed's convention (``text_output``, ``finish_reason``)."""
        infer = ModelInferResponse(model_name=self.model_name, id=self.request_id)
        out = infer.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(text.encode())
        if finish_reason is not None:
            fin = infer.outputs.add(name="finish_reason", datatype="BYTES", shape=[1])
            fin.contents.bytes_contents.append(finish_reason.encode())
        self.send(infer)

    def error(self, message: str) -> None:
        """Send an error response; the runtime ends the stream after it."""
        self.send(ModelStreamInferResponse(error_message=message))
