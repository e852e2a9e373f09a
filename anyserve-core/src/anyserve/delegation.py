"""What the delegation hook answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: A request is delegated at most this many times, so it can never loop.
MAX_DELEGATION_DEPTH = 1

DELEGATED_FROM_HEADER = "X-Delegated-From"
DELEGATION_DEPTH_HEADER = "X-Delegation-Depth"


@dataclass(frozen=True)
class Delegation:
    """Either a target to forward the request to, or a refusal with its reason."""

    url: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def to(cls, url: str, headers: Mapping[str, str] | None = None) -> Delegation:
        return cls(url=url, headers=dict(headers or {}))

    @classmethod
    def refuse(cls, reason: str) -> Delegation:
        return cls(url=None, reason=reason)

    @property
    def refused(self) -> bool:
        return self.url is None
