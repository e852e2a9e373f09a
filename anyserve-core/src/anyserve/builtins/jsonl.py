"""Built-in ``jsonl`` stream encoding: one JSON document per line.

For HTTP clients that do not speak Server-Sent Events; SSE itself is the
``anyserve-encoding-sse`` plugin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from anyserve.hookspecs import hookimpl
from anyserve.records import StreamEncodingSpec


class JsonLinesEncoder:
    media_type = "application/jsonl"

    def event(self, data: Mapping[str, Any]) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode() + b"\n"

    def error(self, message: str, code: str) -> bytes:
        return json.dumps({"error": message, "code": code}, separators=(",", ":")).encode() + b"\n"

    def end(self) -> bytes:
        return b'{"end":true}\n'


@hookimpl
def anyserve_register_stream_encodings(register):
    register(
        StreamEncodingSpec(
            name="jsonl",
            media_type=JsonLinesEncoder.media_type,
            factory=lambda options: JsonLinesEncoder(),
            description="one JSON document per line",
        )
    )
