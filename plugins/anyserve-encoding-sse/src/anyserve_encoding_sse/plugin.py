"""The anyserve plugin module: registers the ``sse`` stream encoding.

Named by the ``anyserve`` entry point ``encoding-sse``; core selects it when
``encoding.name`` is ``"sse"`` (the default) for the router's
``POST /infer/stream``.
"""

from __future__ import annotations

from collections.abc import Callable

from anyserve import hookimpl
from anyserve.errors import ConfigError
from anyserve.records import Options, StreamEncodingSpec
from anyserve_encoding_sse.encoder import MEDIA_TYPE, SSEEncoder

NAME = "sse"


def create_encoder(options: Options) -> SSEEncoder:
    """The factory core calls with ``[encoding.options]``.

    The encoding has nothing to tune, so any option is a mistake in the
    configuration and is reported instead of being silently ignored.
    """
    if options:
        raise ConfigError(f"stream encoding {NAME!r} takes no options; got {', '.join(sorted(options))}")
    return SSEEncoder()


@hookimpl
def anyserve_register_stream_encodings(register: Callable[[StreamEncodingSpec], None]) -> None:
    register(
        StreamEncodingSpec(
            name=NAME,
            media_type=MEDIA_TYPE,
            factory=create_encoder,
            description="Server-Sent Events (text/event-stream)",
        )
    )
