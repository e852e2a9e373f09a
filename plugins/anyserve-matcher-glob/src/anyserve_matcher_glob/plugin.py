"""The anyserve plugin module: registers the ``glob`` capability matcher.

Named by the ``anyserve`` entry point ``matcher-glob``; core selects it when
``matcher.name`` is ``"glob"`` (``ANYSERVE_MATCHER=glob``), for both the
router (choosing replicas) and the agent (choosing workers).
"""

from __future__ import annotations

from collections.abc import Callable

from anyserve import hookimpl
from anyserve.records import MatcherSpec, Options
from anyserve_matcher_glob.matcher import NAME, GlobMatcher


def create_matcher(options: Options) -> GlobMatcher:
    """The factory core calls with ``[matcher.options]``.

    Unknown or ill-typed options raise :class:`anyserve.errors.ConfigError`
    naming the known ones, instead of being silently ignored.
    """
    return GlobMatcher.from_options(options)


@hookimpl
def anyserve_register_matchers(register: Callable[[MatcherSpec], None]) -> None:
    register(
        MatcherSpec(
            name=NAME,
            factory=create_matcher,
            description="required keys with glob values (query or offer side), prefer.* keys rank; exact beats glob",
        )
    )
