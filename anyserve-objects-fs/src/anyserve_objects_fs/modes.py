"""Who may read the store: the modes its directories and files are created with.

Objects are whatever handlers put there (documents, activations, user
data), so by default only the store's own user may read them: directories
0700, files 0600. ``[objects] options = {dir_mode = "0750", file_mode =
"0640"}`` opens a store to a group (replicas of several users sharing a
mount). The modes are applied exactly, with ``chmod`` after creating: a
permissive umask cannot widen them, and a strict one cannot take away what
the configuration grants on purpose.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from anyserve.errors import ConfigError

DEFAULT_DIR_MODE = 0o700
DEFAULT_FILE_MODE = 0o600

_OCTAL = re.compile(r"(?:0o|0)?([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Modes:
    """The permission bits of what the store creates."""

    dir: int = DEFAULT_DIR_MODE
    file: int = DEFAULT_FILE_MODE


#: 0700 directories, 0600 files.
PRIVATE = Modes()


def parse_mode(value: object, option: str, needs: int) -> int:
    """An octal mode string (``"0750"``, ``"750"``, ``"0o750"``) as permission bits.

    Strings only: a TOML integer ``750`` is decimal (octal 1356), a mode
    nobody means. ``needs`` are the bits the store itself cannot work without.
    """
    match = _OCTAL.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f'[objects.options] {option} must be an octal mode in a string, such as "0750" or "0640", got {value!r}'
        )
    mode = int(match.group(1), 8)
    if mode & needs != needs:
        raise ConfigError(
            f"[objects.options] {option} = {value!r} takes from the store's own user what it needs "
            f"(at least {needs:04o}); got {mode:04o}"
        )
    return mode


def make_dirs(path: str, mode: int) -> None:
    """``os.makedirs(path, exist_ok=True)``, each directory it creates given exactly ``mode``.

    ``os.makedirs`` gives the directories above the last one the umask's
    default instead. A directory someone else creates meanwhile is fine; a
    file where a directory should be raises ``FileExistsError`` or
    ``NotADirectoryError``, as ``os.makedirs`` does.
    """
    missing = []
    current = path
    while True:
        try:
            os.mkdir(current, mode)
        except FileExistsError:
            if not os.path.isdir(current):
                raise
            break
        except FileNotFoundError:
            parent = os.path.dirname(current)
            if parent == current:
                raise
            missing.append(current)
            current = parent
            continue
        os.chmod(current, mode)
        break
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, mode)
