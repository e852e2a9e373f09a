"""Generation options from any front, checked once: OpenAI JSON fields and KServe v2 parameters alike.

Both fronts hand :func:`split_options` a flat ``name -> value`` mapping;
what the convention defines becomes :class:`~anyserve.llm.types.Sampling`
(a bad value is a 400 naming the field), the end user's id is kept apart,
and every other field is passed to the handler untouched in ``extra``:
engines have knobs no convention lists, and clients send them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anyserve.errors import InvalidField
from anyserve.llm.types import Sampling


class OptionError(InvalidField):
    """An option has the wrong type or range; ``param`` names it (OpenAI errors carry it)."""


def _int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(name, f"must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise OptionError(name, f"must be {bounds}, got {value}")
    return value


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(name, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise OptionError(name, f"must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise OptionError("stop", f"must be a string or a list of strings, got {value!r}")


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(name, f"must be true or false, got {value!r}")
    return value


def split_options(fields: Mapping[str, Any]) -> tuple[Sampling, str | None, dict[str, Any]]:
    """``(sampling, user, extra)`` from a request's option fields; ``None`` values count as absent.

    ``max_completion_tokens`` (OpenAI's newer name) wins over ``max_tokens``
    when both are given.
    """
    extra: dict[str, Any] = {}
    found: dict[str, Any] = {}
    user: str | None = None
    for name, value in fields.items():
        if value is None:
            continue
        if name in ("max_tokens", "max_completion_tokens"):
            found[name] = _int(name, value, 1)
        elif name == "temperature":
            found[name] = _number(name, value, 0.0, 2.0)
        elif name == "top_p":
            found[name] = _number(name, value, 0.0, 1.0)
        elif name == "stop":
            found[name] = _stop(value)
        elif name == "seed":
            found[name] = _int(name, value)
        elif name == "logprobs":
            found[name] = _bool(name, value)
        elif name == "top_logprobs":
            found[name] = _int(name, value, 0, 20)
        elif name == "n":
            found[name] = _int(name, value, 1, 128)
        elif name == "user":
            if not isinstance(value, str):
                raise OptionError(name, f"must be a string, got {value!r}")
            user = value
        else:
            extra[name] = value
    found["max_tokens"] = found.pop("max_completion_tokens", found.get("max_tokens"))
    return Sampling(**found), user, extra


def sampling_fields(sampling: Sampling, user: str | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The flat fields :func:`split_options` reads back to the same values (defaults left out)."""
    fields: dict[str, Any] = dict(extra)
    defaults = Sampling()
    for name in Sampling.__dataclass_fields__:
        value = getattr(sampling, name)
        if value != getattr(defaults, name):
            fields[name] = list(value) if name == "stop" else value
    if user is not None:
        fields["user"] = user
    return fields
