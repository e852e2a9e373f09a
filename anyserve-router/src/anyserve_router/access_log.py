"""The router's access log: one entry per request, as a text line or a JSON object (``router.access_log``).

HTTP requests (KServe, OpenAI) and the gRPC front's calls (a
``ModelStreamInfer`` run counts as one request, as the metrics count it)
have entries of the same fields; a gRPC entry's method is ``GRPC``, its
path the RPC's, its status the gRPC code (``OK``, ``NOT_FOUND``...).

Off by default: formatting and writing a line per request costs the router
measurable CPU at thousands of requests a second. When off, nothing here
runs: the router uses a plain :class:`RequestContext`; when on, a
:class:`LoggedRequestContext` wraps it and watches what it sends, so the
entry sees the final response headers (``X-Request-Id``, ``X-Served-By``)
as the client does.

The capability a request was routed to is the one the router chose, as
the metrics label it (:data:`anyserve_router.metrics.ROUTED`), so it is the
capability as registered, never what the client typed. OpenAI answers'
token counts are read from the ``usage`` object in the bytes the router
sends (the JSON body, or the stream's last chunks when the client asked for
``stream_options.include_usage``).

Entries go to the ``anyserve.access`` logger, which has its own stderr
handler and does not propagate, so ``--log-level`` neither hides it nor
prints it twice.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from anyserve.metric_names import UNMATCHED
from anyserve.protocol import names
from anyserve_router.body_budget import BodyBudget
from anyserve_router.inbound import REQUEST_ID_SCOPE
from anyserve_router.metrics import ROUTED
from anyserve_router.request_context import App, RequestContext

LOGGER = "anyserve.access"
OFF, TEXT, JSON = "off", "text", "json"

_SERVED_BY = names.SERVED_BY_HEADER.lower().encode()
_REQUEST_ID = names.REQUEST_ID_KEY.lower().encode()
_USAGE = b'"usage"'
_TOKENS = re.compile(rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens)"\s*:\s*(\d+)')
_OPENAI = "/v1"


def front_of(path: str) -> str:
    """Which front a path belongs to: ``openai`` (``/v1``), ``kserve`` (``/infer``, ``/v2``) or ``other``."""
    if path == _OPENAI or path.startswith("/v1/"):
        return "openai"
    if path.startswith(("/infer", "/v2/")) or path == "/v2":
        return "kserve"
    return "other"


class Entry:
    """What is known of one request so far; written once it ends."""

    __slots__ = (
        "capability",
        "front",
        "method",
        "path",
        "replica",
        "request_id",
        "started",
        "status",
        "tokens_in",
        "tokens_out",
        "wall",
    )

    def __init__(self, method: str, path: str, front: str | None = None) -> None:
        self.started = time.perf_counter()
        self.wall = time.time()
        self.method = method
        self.path = path
        self.front = front or front_of(path)
        self.request_id: str | None = None
        self.capability: str | None = None
        self.replica: str | None = None
        #: The HTTP status, or a gRPC call's code.
        self.status: int | str | None = None
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None

    def response_start(self, message: Message) -> None:
        self.status = message["status"]
        for name, value in message.get("headers") or ():
            if name == _SERVED_BY:
                self.replica = value.decode("latin-1")
            elif name == _REQUEST_ID:
                self.request_id = value.decode("latin-1")

    def body(self, chunk: bytes) -> None:
        """Token counts from an OpenAI answer's ``usage``, when this chunk carries one."""
        if _USAGE not in chunk:
            return
        for key, value in _TOKENS.findall(chunk[chunk.rfind(_USAGE) :]):
            if key in (b"prompt_tokens", b"input_tokens"):
                self.tokens_in = int(value)
            else:
                self.tokens_out = int(value)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": _timestamp(self.wall),
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "front": self.front,
            "capability": self.capability,
            "replica": self.replica,
            "status": self.status,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }
        if self.tokens_in is not None or self.tokens_out is not None:
            out["tokens_in"] = self.tokens_in
            out["tokens_out"] = self.tokens_out
        return out


def _timestamp(wall: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    return f"{seconds}.{int(wall % 1 * 1000):03d}Z"


def format_text(fields: dict[str, Any]) -> str:
    """``time id method path status duration front capability replica [in/out tokens]``; ``-`` for unknown.

    Values a client or a replica chose (path, id, capability, replica) are
    written as they are when they hold only visible ASCII, else as a quoted
    JSON string: a path with a percent-encoded newline or space cannot
    forge a line, nor shift the fields of its own.
    """
    line = (
        f"{fields['time']} {_word(fields['request_id'])} {_word(fields['method'])} {_word(fields['path'])} "
        f"{_word(fields['status'])} {fields['duration_ms']:.1f}ms front={fields['front']} "
        f"capability={_word(fields['capability'])} replica={_word(fields['replica'])}"
    )
    if "tokens_in" in fields:
        line += f" tokens={_word(fields['tokens_in'])}/{_word(fields['tokens_out'])}"
    return line


_VISIBLE = re.compile(r"[!-~]+")


def _word(value: object) -> str:
    """One space-free token: ``-`` for unknown, the value if visible ASCII (and not a lone ``-``), else JSON."""
    if value is None:
        return "-"
    text = str(value)
    if text != "-" and not text.startswith('"') and _VISIBLE.fullmatch(text):
        return text
    return json.dumps(text)


class _Format(logging.Formatter):
    """The record's message is the entry's fields; this formats them (the logger adds nothing of its own)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = record.msg  # type: ignore[assignment]
        if self.kind == JSON:
            return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        return format_text(fields)


def access_logger(kind: str) -> logging.Logger:
    """The ``anyserve.access`` logger writing ``kind`` entries to stderr, with its own handler.

    Its level is fixed at INFO and it does not propagate: the router's
    ``--log-level`` governs the other loggers, not this one.
    """
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "anyserve_access", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.anyserve_access = True  # type: ignore[attr-defined]
    handler.setFormatter(_Format(kind))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class LoggedRequestContext(RequestContext):
    """A :class:`RequestContext` that writes an access-log entry for every request once its answer ends."""

    def __init__(self, budget: BodyBudget, logger: logging.Logger) -> None:
        super().__init__(budget)
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: App) -> None:
        entry = Entry(scope["method"], scope["path"])
        openai = entry.front == "openai"

        async def watching(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                entry.response_start(message)
            elif openai and kind == "http.response.body":
                entry.body(message.get("body", b""))
            await send(message)

        try:
            await super().__call__(scope, receive, watching, app)
        finally:
            if entry.request_id is None:  # no answer started (the client left): the id the request was given
                entry.request_id = scope.get(REQUEST_ID_SCOPE)
            routed(entry)
            self.logger.info(entry.fields())


def routed(entry: Entry) -> None:
    """Name the capability the request was routed to on ``entry`` (as the metrics label it), or none."""
    capability = ROUTED.get()  # set where a replica was chosen
    entry.capability = None if capability == UNMATCHED else capability
