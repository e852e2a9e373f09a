"""Reading an inference request off HTTP: body within the limit, format, capability, delegation.

Headers are read from the raw ASGI list (bytes, lower-case names), once per
request, with no per-request objects beyond the query itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request

from anyserve.capability import normalize_key
from anyserve.delegation import MAX_DELEGATION_DEPTH
from anyserve.errors import InvalidRequest
from anyserve_router.errors import BodyTooLarge, NoMatch

CAPABILITY_PREFIX = b"x-capability-"
DELEGATED_FROM = b"x-delegated-from"
DELEGATION_DEPTH = b"x-delegation-depth"
PROTOBUF = "application/x-protobuf"
#: Content types read as a serialised ``ModelInferRequest``; anything else is JSON.
PROTOBUF_TYPES = frozenset(
    {PROTOBUF, "application/protobuf", "application/vnd.google.protobuf", "application/octet-stream"}
)
LIMIT_SETTING = "router.max_body_bytes"
_KEY = re.compile(r"[a-z0-9_.]+")

RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Delegated:
    """A request a replica handed back: route it anywhere but ``origin``, and never again."""

    origin: str
    depth: int


def _too_large(size: int | str, limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes set by {LIMIT_SETTING}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes: by Content-Length first, then while reading."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(declared, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_protobuf(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() in PROTOBUF_TYPES


def _text(value: bytes, header: str) -> str:
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidRequest(f"header {header} must be ASCII (it travels on as gRPC metadata)") from None
    if not text:
        raise InvalidRequest(f"header {header} is empty")
    return text


def capability_query(headers: RawHeaders) -> dict[str, str]:
    """``X-Capability-<Key>: value`` headers as a normalised query (``Model-Family`` -> ``model_family``)."""
    query: dict[str, str] = {}
    for name, value in headers:
        if not name.startswith(CAPABILITY_PREFIX):
            continue
        header = name.decode("latin-1")
        key = normalize_key(header[len(CAPABILITY_PREFIX) :])
        if not _KEY.fullmatch(key):
            raise InvalidRequest(
                f"header {header} does not name a capability key: use X-Capability-<Key> with letters, "
                "digits, '-', '_' or '.', e.g. X-Capability-Type: chat"
            )
        text = _text(value, header)
        if query.get(key, text) != text:
            raise InvalidRequest(f"capability {key!r} is given twice with different values ({query[key]!r}, {text!r})")
        query[key] = text
    return query


def delegation(headers: RawHeaders) -> Delegated | None:
    """The ``X-Delegated-From`` / ``X-Delegation-Depth`` pair, or ``None`` for a client's own request.

    A depth beyond :data:`MAX_DELEGATION_DEPTH` is refused outright: a
    request travels at most one hop, so it can never loop.
    """
    origin = depth = None
    for name, value in headers:
        if name == DELEGATED_FROM:
            origin = _text(value, "X-Delegated-From")
        elif name == DELEGATION_DEPTH:
            depth = _text(value, "X-Delegation-Depth")
    if origin is None and depth is None:
        return None
    if origin is None:
        raise InvalidRequest("X-Delegation-Depth needs X-Delegated-From naming the replica that delegated")
    if depth is None:
        hops = 1
    elif depth.isdigit() and int(depth) >= 1:
        hops = int(depth)
    else:
        raise InvalidRequest(f"X-Delegation-Depth must be a positive integer, got {depth!r}")
    if hops > MAX_DELEGATION_DEPTH:
        raise NoMatch(
            f"refusing a request delegated {hops} times (by {origin!r} last): requests are delegated at most "
            f"{MAX_DELEGATION_DEPTH} time, so no replica was found for it"
        )
    return Delegated(origin, hops)
