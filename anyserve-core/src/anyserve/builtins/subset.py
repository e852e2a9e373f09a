"""Built-in ``subset`` matcher: an offer matches when every query key is present with an equal value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anyserve.capability import Capability
from anyserve.hookspecs import hookimpl
from anyserve.records import MatcherSpec


class SubsetMatcher:
    def score(self, offered: Capability, query: Mapping[str, Any]) -> float | None:
        return 0.0 if offered.matches(query) else None


@hookimpl
def anyserve_register_matchers(register):
    register(
        MatcherSpec(
            name="subset",
            factory=lambda options: SubsetMatcher(),
            description="every query key present with an equal value",
        )
    )
