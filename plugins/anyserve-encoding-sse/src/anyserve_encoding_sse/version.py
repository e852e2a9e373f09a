"""The single place anyserve-encoding-sse's version is written (read by the build too)."""

__version__ = "0.1.0"
