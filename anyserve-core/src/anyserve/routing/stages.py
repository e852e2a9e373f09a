"""The three kinds of routing stage, as protocols a plugin implements.

A stage is built by its record's factory from the ``options`` configured
for it (``[routing.options.<name>]``) and lives as long as the process: a
scorer may learn (``observe``) and keep bounded state between requests.
Stages run on the event loop for every request, so they must be quick and
must not block; they see candidates as :class:`~anyserve.candidates.Candidate`
with the load signals their replica (or worker) reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from anyserve.candidates import Candidate
from anyserve.errors import ConfigError
from anyserve.routing.request import RouteRequest

FILTER = "filter"
SCORER = "scorer"
PICKER = "picker"
KINDS = (FILTER, SCORER, PICKER)


@runtime_checkable
class Filter(Protocol):
    """Drops candidates that must not serve a request."""

    def filter(self, request: RouteRequest, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates that stay, in their order; an empty list means no replica can serve it now."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """Rates every candidate for a request, from 0 (no reason to choose it) to 1 (every reason)."""

    def score(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Sequence[float]:
        """One score in [0, 1] per candidate, in the candidates' order."""
        ...


class Learner(Protocol):
    """A scorer that learns from decisions (prefix index, session pins); optional methods of a scorer."""

    def observe(self, request: RouteRequest, chosen: Candidate) -> None:
        """Called once a request is sent to ``chosen``."""
        ...

    def forget(self, target_id: str) -> None:
        """Called when a replica leaves: drop what is known about it."""
        ...

    def nominate(self, request: RouteRequest, ids: Sequence[str]) -> Iterable[str]:
        """Of ``ids`` (every replica the query matched), those this scorer would rate high, cheaply.

        Asked only when more replicas match than ``[routing] sample``: the
        decision then scores a random sample plus these, so a cache holder
        or a session's home is never left out by chance.
        """
        ...

    def snapshot(self) -> dict[str, Any]:
        """What was learned, as JSON-ready data, so a restarted router need not learn it again.

        Saved at shutdown (``Pipeline.save``); keep it to a few MiB whatever
        was learned: a larger file is not read back.
        """
        ...

    def restore(self, data: dict[str, Any]) -> None:
        """Take back what :meth:`snapshot` gave, at start-up; ``ValueError`` for data it cannot use."""
        ...


@runtime_checkable
class Picker(Protocol):
    """Chooses one candidate by the pipeline's totals (``candidate.route_score``)."""

    def pick(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Candidate:
        """One of ``candidates`` (never empty)."""
        ...


def stage_options(stage: str, options: Mapping[str, Any], defaults: Mapping[str, bool | int | float]) -> dict[str, Any]:
    """``[routing.options.<stage>]`` checked against ``defaults``: each option of its default's type, none unknown.

    A typo is refused by name rather than silently ignored; a value that
    is not a number (or, for a switch, not true or false) says which option.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"routing.options.{stage}: unknown option(s) {', '.join(unknown)}; known: {', '.join(defaults)}"
        )
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        value = options.get(name, default)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"routing.options.{stage}.{name} must be true or false, got {value!r}")
            out[name] = value
            continue
        try:
            out[name] = type(default)(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"routing.options.{stage}.{name} must be a number ({type(default).__name__}), got {value!r}"
            ) from None
    return out
