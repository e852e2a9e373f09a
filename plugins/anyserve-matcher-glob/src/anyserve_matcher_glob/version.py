"""The single place anyserve-matcher-glob's version is written (read by the build too)."""

__version__ = "0.1.0"
