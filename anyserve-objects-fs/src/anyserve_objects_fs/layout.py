"""How objects and the store's own bookkeeping files share one directory tree.

An object with key ``stage1/output.bin`` is the plain file
``<root>/stage1/output.bin``: other tools (and other replicas) can read the
bytes directly. Everything the store writes *besides* objects has a ``~`` in
its name. ``~`` is outside the key alphabet of
:func:`anyserve.objects.validate_key`, so no key can ever name, overwrite or
list one of them, whatever the key looks like (``.meta``, ``x.tmp``, …):

``.~tmp.<hex>``
    an object or sidecar being written; renamed into place when complete.
``.~del.<hex>``
    an object ``cleanup`` is in the middle of removing.
``.~meta.<name>``
    the sidecar of object ``<name>`` in the same directory: JSON
    ``{"content_type": "..."}``, present only when a content type was given.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from anyserve.errors import InvalidRequest
from anyserve.objects import validate_key

INTERNAL_MARK = "~"
TEMP_PREFIX = ".~tmp."
TOMBSTONE_PREFIX = ".~del."
META_PREFIX = ".~meta."


def is_internal(name: str) -> bool:
    return INTERNAL_MARK in name


def temp_path(directory: str) -> str:
    return os.path.join(directory, TEMP_PREFIX + uuid.uuid4().hex)


def tombstone_path(directory: str) -> str:
    return os.path.join(directory, TOMBSTONE_PREFIX + uuid.uuid4().hex)


def meta_path(object_path: str) -> str:
    directory, name = os.path.split(object_path)
    return os.path.join(directory, META_PREFIX + name)


def is_inside(root: str, path: str) -> bool:
    """Whether normalised absolute ``path`` lies strictly below ``root``."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(prefix)


def is_addressable(key: str) -> bool:
    """Whether a key found on disk could be asked for; files a key cannot name are not objects."""
    try:
        validate_key(key)
    except InvalidRequest:
        return False
    return True


@dataclass
class Listing:
    """One directory of the store: its objects and its bookkeeping files, by name."""

    directory: str
    prefix: str  # key prefix of the objects in it: "" at the root, "stage1/" below
    objects: dict[str, os.stat_result] = field(default_factory=dict)
    internal: dict[str, os.stat_result] = field(default_factory=dict)


def walk(root: str) -> Iterator[Listing]:
    """Every directory under ``root`` (root first), never following symlinked directories.

    Not following links keeps a listing inside the root and free of loops;
    symlinks to files are neither objects nor bookkeeping and are skipped
    too. Entries that vanish while we look (a concurrent delete) are
    skipped rather than reported.
    """
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        listing = Listing(directory, prefix)
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not is_internal(entry.name) and is_addressable(prefix + entry.name):
                        pending.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file(follow_symlinks=False):
                    if is_internal(entry.name):
                        listing.internal[entry.name] = entry.stat(follow_symlinks=False)
                    elif is_addressable(prefix + entry.name):
                        listing.objects[entry.name] = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
        yield listing


def prune_empty_dirs(root: str, directory: str) -> None:
    """Remove ``directory`` and its parents up to (not including) ``root`` while they are empty.

    Nested keys create directories; without this, deleted objects would leave
    a growing skeleton behind. A writer that loses the race (its directory
    removed between ``makedirs`` and opening its temp file) simply retries.
    """
    root = os.path.normpath(root)
    directory = os.path.normpath(directory)
    while is_inside(root, directory):
        try:
            os.rmdir(directory)
        except OSError:  # not empty, already gone, or not ours to remove
            return
        directory = os.path.dirname(directory)
