"""JSON as RFC 8259 defines it: what every front reads, and all it writes.

orjson does the work. It refuses what JSON forbids (``NaN``, ``Infinity``)
and numbers beyond a double's range, and reads integers beyond 64 bits as
doubles. A body it refuses is read again by the standard library, for an
error that says where the JSON breaks, and for what JSON allows but orjson
refuses (an escaped lone surrogate). That second reader is held to orjson's
rules: it would otherwise take ``NaN`` and ``Infinity`` (values no JSON
writer can send back), turn ``1e999`` into infinity, and on a 5,000-digit
integer raise Python's own ``ValueError`` about digit limits, which used to
reach clients as a 500. Here each of those is an
:class:`~anyserve.errors.InvalidRequest` naming the field.

Writing, a non-finite float becomes ``null`` (as orjson and KServe's own
server write it): what the protocol writes is always valid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from anyserve.errors import InvalidRequest

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
#: Integer literals longer than this are never read as Python ints (64 bits is at most 20 digits).
_INT_DIGITS = 20
#: Integers of more bits than this cannot be written by ``str()`` (Python's 4,300-digit limit).
_WRITABLE_INT_BITS = 14_000
#: How much of a refused literal an error message quotes.
_SHOWN = 40


class _Refused:
    """A number the reader refuses, kept in place so that the field holding it can be named."""

    __slots__ = ("literal", "why")

    def __init__(self, literal: str, why: str) -> None:
        self.literal = literal
        self.why = why

    def describe(self) -> str:
        text = (
            self.literal
            if len(self.literal) <= _SHOWN
            else f"{self.literal[:_SHOWN]}... ({len(self.literal)} characters)"
        )
        return f"{text} {self.why}"


def quote(value: Any, limit: int = _SHOWN) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters: never a whole body back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _read_int(literal: str) -> int | float | _Refused:
    # int() of a long literal is quadratic, and past 4,300 digits a ValueError: never call it on one.
    digits = len(literal) - (literal[0] == "-")
    if digits <= _INT_DIGITS:
        value = int(literal)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return _read_float(literal)


def _read_float(literal: str) -> float | _Refused:
    value = float(literal)
    if math.isfinite(value):
        return value
    return _Refused(literal, "is beyond the range of a double")


def _read_constant(literal: str) -> _Refused:
    return _Refused(literal, "is not a JSON number (JSON has no NaN or Infinity)")


def _refused(data: Any) -> tuple[str, _Refused] | None:
    """The first refused number in ``data`` and where it is, as ``a.b[2]``; walked without recursion."""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, _Refused):
            return path, value
        if isinstance(value, dict):
            pending.extend((f"{path}.{key}" if path else str(key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value))))
    return None


def _stdlib_loads(body: bytes, what: str) -> Any:
    try:
        data = json.loads(body, parse_int=_read_int, parse_float=_read_float, parse_constant=_read_constant)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not UTF-8 JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidRequest(f"{what} is nested too deeply") from None
    found = _refused(data)
    if found is not None:
        path, refused = found
        where = f"{what}: {path}" if path else what
        raise InvalidRequest(f"{where} = {refused.describe()}")
    return data


def loads(body: bytes, what: str = "request body") -> Any:
    """Any JSON value, or :class:`InvalidRequest` saying where the JSON breaks or which field is refused."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _stdlib_loads(body, what)


def loads_object(body: bytes, what: str = "request body") -> dict[str, Any]:
    """A JSON object, or :class:`InvalidRequest` saying where the JSON breaks or which field is refused."""
    data = loads(body, what)
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _finite(data: Any) -> Any:
    """``data`` with non-finite floats as ``None`` and unwritable integers as ``None``: valid JSON, always."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, int) and not isinstance(data, bool):
        return data if data.bit_length() <= _WRITABLE_INT_BITS else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, the one JSON writer of every HTTP front; non-finite floats are written ``null``.

    orjson writes a 1 MiB tensor's million numbers several times faster than
    the standard library, and writes NaN and infinities as ``null``. What it
    refuses (integers beyond 64 bits, lone surrogates, float subclasses such
    as numpy's) is written by the standard library under the same rule.
    """
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8", "surrogatepass")
