"""The contract of a capability matcher, and scoring helpers built on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from anyserve.capability import Capability


@runtime_checkable
class Matcher(Protocol):
    """Decides whether an offered capability satisfies a query, and how well."""

    def score(self, offered: Capability, query: Mapping[str, Any]) -> float | None:
        """``None`` when ``offered`` cannot serve ``query``; else higher is better."""
        ...
