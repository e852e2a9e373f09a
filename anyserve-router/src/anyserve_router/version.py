"""The single place anyserve-router's version is written (read by the build too)."""

__version__ = "0.1.0"
