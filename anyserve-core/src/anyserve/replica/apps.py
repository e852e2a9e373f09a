"""Finding the application a replica serves."""

from __future__ import annotations

import importlib
import os
import sys

from anyserve.app import AnyServe
from anyserve.errors import ConfigError
from anyserve.plugins import PluginManager


class AppLoadError(ConfigError):
    """``--app`` names something that cannot be imported or is not an app."""


def load_app(ref: str | None, pm: PluginManager) -> AnyServe:
    """``module:attribute`` (attribute defaults to ``app``), or, with no
    reference, a new app holding what installed capability plugins contribute."""
    if ref is None:
        app = AnyServe("plugins")
        for _ in pm.each_impl("anyserve_register_capabilities", app=app):
            pass
        if app.empty:
            raise AppLoadError(
                "no handler is defined: pass --app module:app, or install a plugin that contributes "
                "capabilities (see `anyserve plugins list`)"
            )
        return app

    module_name, _, attr = ref.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `--app myapp:app` finds ./myapp.py, as uvicorn does
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"cannot import app {ref!r}: no module named {exc.name!r}") from None
        raise AppLoadError(f"cannot import app {ref!r}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # the user's module may raise anything at import
        raise AppLoadError(f"cannot import app {ref!r}: {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r} (expected an AnyServe app)") from None
    if not isinstance(app, AnyServe):
        raise AppLoadError(f"{ref!r} is a {type(app).__name__}, not an AnyServe app")
    if app.empty:
        raise AppLoadError(
            f"no handler is defined in {ref!r}: add an @app.capability(...) handler or an @app.worker class"
        )
    return app
