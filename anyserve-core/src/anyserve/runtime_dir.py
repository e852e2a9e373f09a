"""The per-user runtime directory, where what anyserve keeps by default is private to its user.

The default object store used to be ``/tmp/anyserve-objects``: one path for
every user of a machine, created world-readable, so any local user could
read (or, by creating the directory first, own) every object. Defaults now
live under ``$XDG_RUNTIME_DIR/anyserve`` (a directory systemd makes 0700
for each logged-in user) or, without it, ``/tmp/anyserve-<uid>``. That
directory is created 0700 and, because a shared ``/tmp`` lets anyone create
it first, one that exists already is used only if it is a real directory of
this user that nobody else may enter.

Standard library only: :mod:`anyserve.config` reads its default from here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import PurePosixPath
from urllib.parse import quote

from anyserve.errors import ConfigError

#: Where the runtime directory goes when ``$XDG_RUNTIME_DIR`` is unset.
SHARED_TMP = "/tmp"


def runtime_dir(env: Mapping[str, str] | None = None) -> str:
    """``$XDG_RUNTIME_DIR/anyserve`` when that variable names an absolute path, else ``/tmp/anyserve-<uid>``."""
    env = os.environ if env is None else env
    base = env.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        return os.path.join(base, "anyserve")
    return os.path.join(SHARED_TMP, f"anyserve-{os.getuid()}")


def default_objects_dir(env: Mapping[str, str] | None = None) -> str:
    """The object store's directory when ``objects.url`` is not configured."""
    return os.path.join(runtime_dir(env), "objects")


def default_objects_url(env: Mapping[str, str] | None = None) -> str:
    """``objects.url``'s default: :func:`default_objects_dir` as a ``file://`` URL."""
    return "file://" + quote(PurePosixPath(default_objects_dir(env)).as_posix())


def ensure_private_dir(path: str) -> str:
    """Create ``path`` (mode 0700) unless it exists; refuse it unless it is this user's and nobody else's.

    ``lstat``, not ``stat``: a symlink planted where the directory should be
    would hand everything written there to whoever planted it.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the private directory {path}: {exc.strerror}") from None
    else:
        os.chmod(path, 0o700)  # exactly: the umask may have taken bits the owner needs
    info = os.lstat(path)
    advice = "remove it (or set objects.url to a directory of your own)"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} is not a directory but a {_kind(info.st_mode)}; refusing to use it: {advice}")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()}); refusing to use it: {advice}"
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: others may enter it; it must be 0700 "
            f"(chmod 700 {path}, or {advice})"
        )
    return path


def _kind(mode: int) -> str:
    return "symbolic link" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "special file"
