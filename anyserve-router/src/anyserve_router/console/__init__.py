"""The router's read-only web console at ``/console``: a static page that polls ``/registry`` and ``/metrics``.

See :mod:`anyserve_router.console.routes` for how it is served and docs/console.md for how to use it.
"""

from anyserve_router.console.routes import build_console_routes

__all__ = ["build_console_routes"]
