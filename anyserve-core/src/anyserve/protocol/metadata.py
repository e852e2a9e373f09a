"""What travels with a request besides its body, read once at each edge.

:class:`RequestMeta` holds the capability query, the delegation marks, the
deadline, the request id and the trace context. Each hop parses it once,
where the request arrives: from HTTP headers at the router
(:meth:`RequestMeta.from_http`), from gRPC metadata or a frame's string map
at a replica (:meth:`RequestMeta.from_metadata`); it leaves again as
metadata pairs (:meth:`RequestMeta.to_metadata`), which gRPC, the router
link and the worker transports all carry as they are.

The query's keys and values are normalised here (``Model-Family`` ->
``model_family``, ``True`` -> ``true``), so matchers and caches downstream
compare it as it is.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from anyserve.capability import normalize_key, normalize_value
from anyserve.errors import InvalidRequest
from anyserve.protocol import names

#: Capability keys a header or metadata key may name.
_KEY = re.compile(r"[a-z0-9_.]+")
_CAPABILITY_KEY = names.CAPABILITY_KEY.encode()
_PLAIN_KEYS = {
    names.DELEGATED_FROM_KEY.encode(): "delegated_from",
    names.DELEGATION_DEPTH_KEY.encode(): "depth",
    names.REQUEST_ID_KEY.encode(): "request_id",
    names.TIMEOUT_KEY.encode(): "timeout",
    names.OPENAI_TIMEOUT_KEY.encode(): "read_timeout",
    names.TRACEPARENT_KEY.encode(): "traceparent",
    names.TRACESTATE_KEY.encode(): "tracestate",
    names.SESSION_KEY.encode(): "session",
}
#: Where a client's credential may be: ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``. Looked up in
#: the same table as the plain fields, so a header that is neither costs one lookup, not two.
_BEARER, _API_KEY = "bearer", "api_key"
_PLAIN_KEYS[b"authorization"] = _BEARER
_PLAIN_KEYS[names.API_KEY_HEADER.lower().encode()] = _API_KEY
_CREDENTIALS = (_BEARER, _API_KEY)
_PLAIN_TEXT_KEYS = {key.decode(): name for key, name in _PLAIN_KEYS.items()}
#: Longest credential read; a longer one is no key anyone was given.
MAX_CREDENTIAL = 4096
#: Longest accepted request id, header value or trace field (bytes).
MAX_FIELD = 256

Pairs = Iterable[tuple[str, str | bytes]]


#: A random prefix per process and a counter: unique across processes in practice, and no system
#: call per request (``uuid4`` reads ``os.urandom`` every time).
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """A request's routing and tracing fields, the same object on every hop."""

    #: The capability query, normalised; empty when the request names its capability by model name.
    query: Mapping[str, str] = field(default_factory=dict)
    #: The replica that delegated the request back to the router, if any.
    delegated_from: str | None = None
    #: How many times the request was delegated (0 for a client's own request).
    depth: int = 0
    #: ``time.monotonic()`` by which the request must be answered (a stream: its first response), if one is set:
    #: ``X-Request-Timeout``, else the OpenAI SDK's ``X-Stainless-Read-Timeout``; gRPC's own deadline between hops.
    deadline: float | None = None
    request_id: str = ""
    traceparent: str = ""
    tracestate: str = ""
    #: Agent -> worker: which of the worker's handlers serves the request.
    handler: int | None = None
    #: The conversation the request belongs to (``X-Session-Id``), for session-affine routing.
    session: str = ""
    #: The caller's credential (an API key, or a cluster member's token), read at the edge and checked there;
    #: never written to metadata, so it does not travel past the hop that read it.
    credential: str | None = field(default=None, repr=False)

    # -- reading -----------------------------------------------------------------

    @classmethod
    def from_http(
        cls,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        default_query: Mapping[str, str] | None = None,
        new_id: bool = False,
    ) -> RequestMeta:
        """From ASGI raw headers (lower-case byte names); a malformed one is :class:`InvalidRequest`.

        Clients write these headers, so every value is checked: capability
        keys must be ``[a-z0-9_.]`` once normalised, values ASCII (they travel
        on as gRPC metadata), a key given twice must agree with itself.
        ``default_query`` is the query when no ``X-Capability-*`` header names
        one (a KServe path's model name); ``new_id`` makes up a request id
        when the client sent none. Both are settled here, in the one object
        built per request.
        """
        query: dict[str, str] = {}
        plain: dict[str, str] = {}
        credential: str | None = None
        for raw_name, raw_value in headers:
            if raw_name.startswith(_CAPABILITY_KEY):
                header = raw_name.decode("latin-1")
                key = normalize_key(header[len(names.CAPABILITY_KEY) :])
                if not _KEY.fullmatch(key):
                    raise InvalidRequest(
                        f"header {header} does not name a capability key: use X-Capability-<Key> with letters, "
                        "digits, '-', '_' or '.', e.g. X-Capability-Type: chat"
                    )
                text = _header_text(raw_value, header)
                if query.get(key, text) != text:
                    raise InvalidRequest(
                        f"capability {key!r} is given twice with different values ({query[key]!r}, {text!r})"
                    )
                query[key] = text
            elif (name := _PLAIN_KEYS.get(raw_name)) is not None:
                if name in _CREDENTIALS:  # not checked as a field: a bad one is the server's 401 to give, not a 400
                    credential = _credential(raw_value.decode("latin-1"), name is _BEARER) or credential
                else:
                    plain[name] = _header_text(raw_value, raw_name.decode("latin-1"))
        if new_id and "request_id" not in plain:
            plain["request_id"] = new_request_id()
        return cls._build(query or dict(default_query or {}), plain, strict=True, credential=credential)

    @classmethod
    def from_metadata(cls, pairs: Pairs | None, *, timeout: float | None = None) -> RequestMeta:
        """From gRPC metadata or a frame's string map (``map.items()``).

        ``timeout`` is a deadline the carrier knows itself (gRPC's
        ``time_remaining()``); it wins over a ``x-request-timeout`` pair.
        Peers here are anyserve's own hops or KServe clients, so unreadable
        fields are ignored rather than refused: an unreadable delegation depth
        counts as one hop when an origin is named (so the request is never
        delegated again), and as none without one.
        """
        query: dict[str, str] = {}
        plain: dict[str, str] = {}
        handler: int | None = None
        credential: str | None = None
        for key, value in pairs or ():
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if key.startswith(names.CAPABILITY_KEY):
                if not key.endswith("-bin"):
                    query[normalize_key(key[len(names.CAPABILITY_KEY) :])] = text.strip()
            elif (name := _PLAIN_TEXT_KEYS.get(key)) is not None:
                if name in _CREDENTIALS:
                    credential = _credential(text, name is _BEARER) or credential
                else:
                    plain[name] = text
            elif key == names.HANDLER_KEY and text.isdigit():
                handler = int(text)
        deadline = None if timeout is None else time.monotonic() + timeout
        return cls._build(query, plain, strict=False, credential=credential, handler=handler, deadline=deadline)

    @classmethod
    def _build(
        cls,
        query: dict[str, str],
        plain: dict[str, str],
        *,
        strict: bool,
        credential: str | None = None,
        handler: int | None = None,
        deadline: float | None = None,
    ) -> RequestMeta:
        """The one object per request: built once (``dataclasses.replace`` would cost as much again)."""
        origin = plain.get("delegated_from")
        depth_text = plain.get("depth")
        if depth_text is None:
            depth = 1 if origin is not None else 0
        elif depth_text.isdigit() and int(depth_text) >= 1:
            depth = int(depth_text)
        elif strict:
            raise InvalidRequest(f"{names.DELEGATION_DEPTH_HEADER} must be a positive integer, got {depth_text!r}")
        else:  # unreadable between hops: delegated once if it names an origin (never delegated again), else not
            depth = 1 if origin is not None else 0
        if depth and origin is None:
            if strict:
                raise InvalidRequest(
                    f"{names.DELEGATION_DEPTH_HEADER} needs {names.DELEGATED_FROM_HEADER} naming the replica that "
                    "delegated"
                )
            depth = 0
        if deadline is None:  # else the carrier's own (gRPC's time remaining), which wins over a pair
            if (timeout := plain.get("timeout")) is not None:
                deadline = _deadline(timeout, strict)
            elif (read_timeout := plain.get("read_timeout")) is not None:
                deadline = _deadline(read_timeout, False)  # the SDK's header, not ours: an odd value is ignored
        request_id = plain.get("request_id", "")
        if strict and len(request_id) > MAX_FIELD:
            raise InvalidRequest(f"{names.REQUEST_ID_HEADER} is longer than {MAX_FIELD} characters")
        return cls(
            query=query,
            delegated_from=origin,
            depth=depth,
            deadline=deadline,
            request_id=request_id,
            traceparent=plain.get("traceparent", ""),
            tracestate=plain.get("tracestate", ""),
            handler=handler,
            credential=credential,
            session=plain.get("session", ""),
        )

    # -- writing ------------------------------------------------------------------

    def to_metadata(
        self, *, handler: int | None = None, deadline: float | None = None, trace: bool = True
    ) -> list[tuple[str, str]]:
        """The fields as metadata pairs: gRPC metadata, and the frame maps of the link and of workers.

        ``deadline`` replaces the meta's own (the router's default, for a
        request that came without one), so no copy of the meta is made per
        request. ``trace=False`` leaves out ``traceparent``/``tracestate``
        (for a hop that sends its own, or tells its worker "not sampled" by
        sending none).
        """
        md = [(names.CAPABILITY_KEY + key.replace("_", "-"), value) for key, value in self.query.items()]
        if self.delegated_from is not None:
            md.append((names.DELEGATED_FROM_KEY, self.delegated_from))
            md.append((names.DELEGATION_DEPTH_KEY, str(self.depth)))
        if self.request_id:
            md.append((names.REQUEST_ID_KEY, self.request_id))
        if deadline is None:
            deadline = self.deadline
        if deadline is not None:
            md.append((names.TIMEOUT_KEY, f"{max(0.0, deadline - time.monotonic()):.3f}"))
        if trace and self.traceparent:
            md.append((names.TRACEPARENT_KEY, self.traceparent))
            if self.tracestate:
                md.append((names.TRACESTATE_KEY, self.tracestate))
        if self.session:
            md.append((names.SESSION_KEY, self.session))
        if handler is not None:
            md.append((names.HANDLER_KEY, str(handler)))
        return md

    def timeout(self) -> float | None:
        """Seconds left before the deadline (never negative), ``None`` without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def with_query(self, query: Mapping[str, str]) -> RequestMeta:
        return replace(self, query=query)

    def with_request_id(self) -> RequestMeta:
        """This meta with a request id, made up when the caller sent none."""
        return self if self.request_id else replace(self, request_id=new_request_id())


def _credential(text: str, bearer: bool) -> str | None:
    """The key in an ``Authorization: Bearer`` or ``X-Api-Key`` value; None for none (not an error: the check is
    the server's, which answers 401 where a key is needed)."""
    text = text.strip()
    if bearer:
        if text[:7].lower() != "bearer ":
            return None
        text = text[7:].strip()
    return text if text and len(text) <= MAX_CREDENTIAL else None


def _header_text(value: bytes, header: str) -> str:
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidRequest(f"header {header} must be ASCII (it travels on as gRPC metadata)") from None
    if not text:
        raise InvalidRequest(f"header {header} is empty")
    if len(text) > MAX_FIELD and not header.lower().startswith(names.CAPABILITY_KEY):
        raise InvalidRequest(f"header {header} is longer than {MAX_FIELD} characters")
    return text


def _deadline(text: str, strict: bool) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        if strict:
            raise InvalidRequest(f"{names.TIMEOUT_HEADER} must be a positive number of seconds, got {text!r}")
        # Between hops "0.000" is a deadline that has passed on the way, not the absence of one.
        return time.monotonic() if seconds == 0 else None
    return time.monotonic() + seconds


def query_from_request(model_name: str, model_version: str, parameters: Mapping[str, Any]) -> dict[str, str]:
    """The query a request names in its body, for clients that send no capability metadata.

    Request parameters ``capability.<key>`` first; else the KServe model name
    as ``type`` and its version as ``model``, so stock KServe clients work.
    ``parameters`` maps names to ``InferParameter`` messages.
    """
    query = {
        normalize_key(name[len(names.CAPABILITY_PARAMETER) :]): normalize_value(_parameter_value(param))
        for name, param in parameters.items()
        if name.startswith(names.CAPABILITY_PARAMETER)
    }
    if query:
        return query
    if model_name:
        query["type"] = normalize_value(model_name)
    if model_version:
        query["model"] = normalize_value(model_version)
    return query


def _parameter_value(param: Any) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return "" if choice is None else getattr(param, choice)
