"""From ``objects.url`` and ``[objects.options]`` to a :class:`FileStore`.

Core hands the factory the configured URL untouched: ``file:///abs/dir``,
``file://localhost/abs/dir`` or a plain directory path (core maps a URL
without a scheme to ``file``). Anything else is a configuration mistake and
is reported as one, naming what would have been accepted.

The default URL names ``objects`` in the user's runtime directory
(:mod:`anyserve.runtime_dir`); that directory is made private, or refused
when someone else made it first or may enter it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from anyserve.errors import ConfigError
from anyserve.runtime_dir import default_objects_dir, ensure_private_dir
from anyserve_objects_fs.modes import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Modes, parse_mode
from anyserve_objects_fs.store import DEFAULT_TEMP_GRACE_SECONDS, FileStore

#: option -> (accepted types, meaning); unknown options are an error, not ignored.
OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "fsync": ((bool,), "fsync each object and its directory before create() returns (default false)"),
    "temp_grace_seconds": (
        (int, float),
        f"age after which cleanup() removes abandoned temp files (default {DEFAULT_TEMP_GRACE_SECONDS:g})",
    ),
    "dir_mode": (
        (str,),
        f'mode of the directories the store creates, octal in a string (default "{DEFAULT_DIR_MODE:04o}")',
    ),
    "file_mode": (
        (str,),
        f'mode of the objects the store writes, octal in a string (default "{DEFAULT_FILE_MODE:04o}")',
    ),
}


_MODES = ("dir_mode", "file_mode")


def root_from_url(url: str) -> str:
    """The directory a ``file://`` URL or plain path names, made absolute."""
    if not url:
        raise ConfigError("objects.url is empty; use file:///absolute/dir or a directory path")
    parts = urlsplit(url)
    if not parts.scheme:
        # A plain path: relative ones are taken from the current directory,
        # so give every process that shares a store the same absolute path.
        return os.path.abspath(os.path.expanduser(url))
    if parts.scheme != "file":
        raise ConfigError(f"the fs object backend handles file:// URLs and plain paths, not {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"objects.url {url!r} names host {parts.netloc!r}; file:// URLs must be local "
            "(file:///abs/dir; mount a shared directory to share objects between hosts)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"objects.url {url!r} has a query or fragment; file:// URLs take a path only")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"objects.url {url!r} needs an absolute path: file:///abs/dir")
    return path


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as FileStore keyword arguments; unknown or ill-typed options are refused."""
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name not in OPTIONS:
            known = "; ".join(f"{n}: {doc}" for n, (_, doc) in OPTIONS.items())
            raise ConfigError(f"unknown [objects.options] setting {name!r} for the fs backend; known: {known}")
        if name in _MODES:  # parse_mode says why a number is not a mode, below
            checked[name] = value
            continue
        types, _ = OPTIONS[name]
        # bool is an int: keep it out of numeric options, and numbers out of flags.
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"[objects.options] {name} must be {expected}, got {value!r}")
        checked[name] = value
    grace = checked.get("temp_grace_seconds")
    if grace is not None and (not math.isfinite(grace) or grace < 0):
        raise ConfigError(f"[objects.options] temp_grace_seconds must be a finite number >= 0, got {grace!r}")
    dir_mode = checked.pop("dir_mode", None)
    file_mode = checked.pop("file_mode", None)
    checked["modes"] = Modes(
        dir=DEFAULT_DIR_MODE if dir_mode is None else parse_mode(dir_mode, "dir_mode", needs=0o700),
        file=DEFAULT_FILE_MODE if file_mode is None else parse_mode(file_mode, "file_mode", needs=0o600),
    )
    return checked


def open_store(url: str, options: Mapping[str, Any] | None = None) -> FileStore:
    """The ``factory`` of the ``fs`` backend record."""
    root = root_from_url(url)
    kwargs = check_options(options or {})
    if root == default_objects_dir():
        ensure_private_dir(os.path.dirname(root))
    return FileStore(root, **kwargs)
