"""Capabilities: the key/value attributes requests ask for and handlers offer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: Keys an offer may carry that describe its runtime state, not the capability;
#: they are stripped before matching (``stream``: handled by a streaming
#: handler; ``state``: hot / cold / starting).
RUNTIME_KEYS = ("stream", "state")


def normalize_value(value: Any) -> str:
    """The form two attribute values are compared in.

    Queries arrive as text (HTTP headers, gRPC metadata) while handlers
    declare typed values (``gpus=2``, ``quantized=True``); comparing
    normalised text makes ``X-Capability-Gpus: 2`` match ``gpus=2``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalize_key(key: str) -> str:
    """Header names are case-insensitive and spell ``_`` as ``-``: ``X-Capability-Model-Family``
    must reach ``model_family``."""
    return str(key).strip().lower().replace("-", "_")


def normalize_query(query: Mapping[str, Any]) -> dict[str, str]:
    """Normalised keys and values, the form queries and offers are compared in."""
    return {normalize_key(k): normalize_value(v) for k, v in query.items()}


class Capability(Mapping[str, Any]):
    """An immutable set of attributes such as ``{type: chat, model: llama-70b}``.

    It behaves as a read-only mapping, is hashable, and ``matches`` implements
    the plain subset rule (every query key present with an equal value);
    richer matching lives in matcher plugins.
    """

    __slots__ = ("_attrs", "_key")

    def __init__(self, attrs: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        merged = dict(attrs or {})
        merged.update(kwargs)
        self._attrs: dict[str, Any] = {normalize_key(k): v for k, v in merged.items()}
        self._key = frozenset(normalize_query(self._attrs).items())

    def matches(self, query: Mapping[str, Any]) -> bool:
        """True when every query key is present here with an equal value.

        An empty query matches every capability.
        """
        return normalize_query(query).items() <= self._key

    def to_dict(self) -> dict[str, Any]:
        """A copy: changing it never changes the capability."""
        return dict(self._attrs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capability:
        return cls(data)

    def __getitem__(self, key: str) -> Any:
        return self._attrs[normalize_key(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Capability):
            return self._key == other._key
        if isinstance(other, Mapping):
            return self._key == frozenset(normalize_query(other).items())
        return NotImplemented

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._attrs.items())
        return f"Capability({inner})"
