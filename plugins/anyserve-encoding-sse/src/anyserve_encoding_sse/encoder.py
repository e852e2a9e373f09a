"""The ``text/event-stream`` encoder (WHATWG HTML, "Server-sent events").

Wire shape, one event per streamed response::

    data: {"model_name":"chat","outputs":[...]}\n\n      each response
    event: error\ndata: {"error":"...","code":"..."}\n\n   a failure; the stream ends
    event: end\ndata: [DONE]\n\n                          normal end of stream

Why a single ``data:`` line is always enough: an event-stream line ends at CR,
LF or CRLF, so a payload containing any of them would have to be split over
several ``data:`` lines. JSON never contains them raw -- orjson (like
``json.dumps``) escapes every control character inside strings (``\\n``,
``\\r``) and writes no whitespace between tokens -- so each payload is one
line and the encoder never scans or splits the text. That keeps the per-token
cost of a stream to one orjson call and two byte concatenations.

Why the end marker carries both ``event: end`` and ``data: [DONE]``: a client
written for anyserve listens for the named ``end`` event (a browser
``EventSource`` needs a named event to tell "finished" from a dropped
connection, after which it would reconnect), while clients written for the
OpenAI streaming API -- which most LLM tooling is -- read only the ``data``
field and stop at the literal ``[DONE]``. An event needs a non-empty ``data``
field to be dispatched at all, so the marker costs nothing extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

MEDIA_TYPE = "text/event-stream"

_DATA = b"data: "
_ERROR = b"event: error\ndata: "
_EVENT_END = b"\n\n"
_END = b"event: end\ndata: [DONE]\n\n"


def _compact_json(data: Any) -> bytes:
    """Compact JSON as UTF-8, keeping non-ASCII text as is (3 bytes, not a 6-byte escape).

    orjson writes it several times faster than the standard library, which
    matters once per token. What orjson refuses (a string holding a lone
    surrogate, an integer beyond 64 bits) falls back to the standard
    library's ASCII escapes rather than failing the stream.
    """
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return json.dumps(data, separators=(",", ":")).encode("ascii")


class SSEEncoder:
    """Implements :class:`anyserve.encoding.StreamEncoder` for Server-Sent Events.

    Stateless, so one instance may serve every stream of a router.
    """

    media_type = MEDIA_TYPE

    def event(self, data: Mapping[str, Any]) -> bytes:
        """One response as one ``message`` event with a single ``data:`` line."""
        return _DATA + _compact_json(data) + _EVENT_END

    def error(self, message: str, code: str) -> bytes:
        """A named ``error`` event, so clients need not sniff ordinary payloads for errors."""
        return _ERROR + _compact_json({"error": message, "code": code}) + _EVENT_END

    def end(self) -> bytes:
        """A named ``end`` event whose data is the OpenAI-style ``[DONE]`` marker."""
        return _END
