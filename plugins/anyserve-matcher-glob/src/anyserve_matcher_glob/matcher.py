"""The ``glob`` matcher: required and preferred attributes, glob values on either side.

Rules (the README has the full table and worked examples):

* Keys are compared after :func:`anyserve.capability.normalize_key`, values
  after :func:`anyserve.capability.normalize_value` (``2`` == ``"2"``,
  ``True`` == ``"true"``). Runtime keys (:data:`anyserve.capability.RUNTIME_KEYS`)
  are ignored on both sides.
* A query key starting with a *preference prefix* (``prefer.`` or
  ``prefer_`` by default) is a preference; every other query key is
  required.
* A required key must be present in the offer with a value that fits:
  equal text (*exact*), or -- when either value is a glob -- the other value,
  read as plain text, matched by :func:`fnmatch.fnmatchcase` (*glob*). A
  pattern is never intersected with a pattern.
* Preferences never exclude an offer; each one the offer satisfies (by the
  same value rule) adds to the score.

Score: ``None`` when a required key fails, else the sum of
:data:`REQUIRED_EXACT` / :data:`REQUIRED_GLOB` per required key and
:data:`PREFERRED_EXACT` / :data:`PREFERRED_GLOB` per satisfied preference.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from anyserve.capability import RUNTIME_KEYS, Capability, normalize_key, normalize_value
from anyserve.errors import ConfigError

NAME = "glob"

#: Score of a required key whose values are equal text.
REQUIRED_EXACT = 1.0
#: Score of a required key satisfied only through a glob (either side).
REQUIRED_GLOB = 0.5
#: Score of a preference the offer satisfies with equal text.
PREFERRED_EXACT = 10.0
#: Score of a preference the offer satisfies only through a glob.
PREFERRED_GLOB = 9.5

DEFAULT_PREFER_PREFIXES: tuple[str, ...] = ("prefer.", "prefer_")

#: Options ``[matcher.options]`` may hold, with what each means (for error messages).
KNOWN_OPTIONS: dict[str, str] = {
    "prefer_prefix": (
        'a string or a list of strings; query keys starting with one are preferences (default ["prefer.", "prefer_"])'
    ),
    "case_sensitive_values": "true or false; false compares values case-insensitively (default true)",
}

_RUNTIME = frozenset(RUNTIME_KEYS)
_EXACT, _GLOB = 0, 1  # how a value fit: index into a (exact, glob) score pair
_REQUIRED = (REQUIRED_EXACT, REQUIRED_GLOB)
_PREFERRED = (PREFERRED_EXACT, PREFERRED_GLOB)
_CACHE_SIZE = 4096

Pattern = Callable[[str], Any]  # a compiled pattern's ``fullmatch``-like ``match``


def is_glob(text: str) -> bool:
    """True when :func:`fnmatch.fnmatchcase` would read ``text`` as a pattern, not literally.

    That is: it holds ``*`` or ``?``, or a ``[`` that opens a set closed by a
    later ``]`` (``[]`` and ``[!]`` alone do not close a set: a ``]`` right
    after the opening is a member). An unclosed ``[`` is a literal character,
    as it is for fnmatch. To match a metacharacter literally, bracket it:
    ``[*]``, ``[?]``, ``[[]``.
    """
    if "*" in text or "?" in text:
        return True
    start = text.find("[")
    if start < 0:
        return False
    # Only the first "[" matters: if no "]" follows it, none follows a later one either.
    i = start + 1
    if i < len(text) and text[i] == "!":
        i += 1
    if i < len(text) and text[i] == "]":
        i += 1
    return text.find("]", i) >= 0


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(pattern: str) -> Pattern:
    return re.compile(translate(pattern)).match


@dataclass(frozen=True)
class _Value:
    """One side's value, normalised (and folded when matching ignores case)."""

    text: str
    pattern: Pattern | None  # set when ``text`` is a glob

    @classmethod
    def of(cls, raw: Any, fold: bool) -> _Value:
        text = normalize_value(raw)
        if fold:
            text = text.casefold()
        return cls(text, _compile(text) if is_glob(text) else None)


def _fit(offered: _Value, wanted: _Value) -> int | None:
    """``_EXACT``, ``_GLOB`` or ``None`` (no fit) for an offered value against a wanted one."""
    if offered.text == wanted.text:
        return _EXACT
    if wanted.pattern is not None and wanted.pattern(offered.text):
        return _GLOB
    if offered.pattern is not None and offered.pattern(wanted.text):
        return _GLOB
    return None


@dataclass(frozen=True)
class _Plan:
    """A query split into required and preferred terms, runtime keys dropped."""

    required: tuple[tuple[str, _Value], ...]
    preferred: tuple[tuple[str, _Value], ...]


def _parse_prefixes(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ConfigError(
            f"matcher {NAME!r}: option prefer_prefix must be a string or a list of strings, got {value!r}"
        )
    prefixes = []
    for raw in items:
        prefix = normalize_key(raw)
        if not prefix:
            raise ConfigError(
                f"matcher {NAME!r}: option prefer_prefix must not contain an empty prefix "
                f"(it would turn every query key into a preference); got {value!r}"
            )
        prefixes.append(prefix)
    # Longest first, so "prefer_eu_" wins over "prefer_" when both are configured.
    return tuple(sorted(dict.fromkeys(prefixes), key=len, reverse=True))


class GlobMatcher:
    """Implements :class:`anyserve.matching.Matcher` with globs and preferences.

    Stateless apart from bounded caches of parsed queries and offers, so one
    instance serves every request of a router or agent, from any thread.
    """

    def __init__(
        self,
        *,
        prefer_prefix: str | Sequence[str] = DEFAULT_PREFER_PREFIXES,
        case_sensitive_values: bool = True,
    ) -> None:
        if not isinstance(case_sensitive_values, bool):
            raise ConfigError(
                f"matcher {NAME!r}: option case_sensitive_values must be true or false, got {case_sensitive_values!r}"
            )
        self.prefer_prefixes = _parse_prefixes(prefer_prefix)
        self.case_sensitive_values = case_sensitive_values
        self._fold = not case_sensitive_values
        self._plan_for = functools.lru_cache(maxsize=_CACHE_SIZE)(self._plan)
        self._offer_for = functools.lru_cache(maxsize=_CACHE_SIZE)(self._offer)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GlobMatcher:
        """Build from a ``[matcher.options]`` table; unknown or ill-typed options are a :class:`ConfigError`."""
        unknown = sorted(set(options) - set(KNOWN_OPTIONS))
        if unknown:
            known = "; ".join(f"{name}: {meaning}" for name, meaning in sorted(KNOWN_OPTIONS.items()))
            raise ConfigError(
                f"matcher {NAME!r} got unknown option(s) {', '.join(unknown)} in [matcher.options]; "
                f"known options: {known}"
            )
        return cls(**options)

    # -- the Matcher protocol ----------------------------------------------

    def score(self, offered: Capability | Mapping[str, Any], query: Mapping[str, Any]) -> float | None:
        """``None`` when a required key is missing or does not fit; else the score (see module doc)."""
        plan = self._plan_for(frozenset((normalize_key(k), normalize_value(v)) for k, v in query.items()))
        offer = self._offer_for(offered) if isinstance(offered, Capability) else self._offer(offered)
        total = 0.0
        for key, wanted in plan.required:
            have = offer.get(key)
            fit = None if have is None else _fit(have, wanted)
            if fit is None:
                return None
            total += _REQUIRED[fit]
        for key, wanted in plan.preferred:
            have = offer.get(key)
            fit = None if have is None else _fit(have, wanted)
            if fit is not None:
                total += _PREFERRED[fit]
        return total

    # -- parsing, cached -----------------------------------------------------

    def preference_key(self, key: str) -> str | None:
        """The attribute a normalised query key prefers, or ``None`` when the key is required.

        A key that is nothing but a prefix (``prefer_``) names no attribute
        and is an ordinary required key.
        """
        for prefix in self.prefer_prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                return key[len(prefix) :]
        return None

    def _plan(self, query: frozenset[tuple[str, str]]) -> _Plan:
        required: list[tuple[str, _Value]] = []
        preferred: list[tuple[str, _Value]] = []
        for key, value in sorted(query):
            attr = self.preference_key(key)
            target, terms = (key, required) if attr is None else (attr, preferred)
            if target in _RUNTIME:
                continue
            terms.append((target, _Value.of(value, self._fold)))
        return _Plan(tuple(required), tuple(preferred))

    def _offer(self, offered: Mapping[str, Any]) -> dict[str, _Value]:
        out: dict[str, _Value] = {}
        for key, value in offered.items():
            norm = normalize_key(key)
            if norm not in _RUNTIME:
                out[norm] = _Value.of(value, self._fold)
        return out

    def __repr__(self) -> str:
        return (
            f"GlobMatcher(prefer_prefix={list(self.prefer_prefixes)!r}, "
            f"case_sensitive_values={self.case_sensitive_values!r})"
        )
