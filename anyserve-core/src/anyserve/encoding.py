"""The contract of a stream encoding (how the router writes a stream over HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class StreamEncoder(Protocol):
    """Turns a run of streamed responses into bytes for an HTTP body."""

    media_type: str

    def event(self, data: Mapping[str, Any]) -> bytes:
        """One response (KServe v2 JSON as a dict)."""
        ...

    def error(self, message: str, code: str) -> bytes:
        """An error, distinct from ordinary events; the stream ends after it."""
        ...

    def end(self) -> bytes:
        """The end-of-stream marker."""
        ...
