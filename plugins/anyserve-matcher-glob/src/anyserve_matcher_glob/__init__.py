"""Glob capability matcher for anyserve (matcher name ``glob``).

The plugin module registered through the ``anyserve`` entry-point group is
:mod:`anyserve_matcher_glob.plugin`; :class:`GlobMatcher` is importable here
for code that wants to score offers without going through the catalog.
"""

from anyserve_matcher_glob.matcher import GlobMatcher, is_glob
from anyserve_matcher_glob.version import __version__

__all__ = ["GlobMatcher", "__version__", "is_glob"]
