"""``FileStore``: objects as plain files under one directory, shared by every process that mounts it.

The store holds no state besides its configuration: every answer comes from
the filesystem, so any number of ``FileStore`` instances — in one process or
in many, on one host or on several sharing the directory — see the same
objects. Writes are atomic renames (see :mod:`anyserve_objects_fs.writing`),
so a reader gets either nothing, the previous object or the whole new one.
"""

from __future__ import annotations

import json
import mmap
import os
import time
import uuid
from contextlib import suppress
from stat import S_ISDIR, S_ISREG
from typing import BinaryIO

from anyserve.errors import ConfigError, InvalidRequest, ObjectNotFound
from anyserve.objects import Data, ObjRef, as_ref, validate_key
from anyserve_objects_fs import layout
from anyserve_objects_fs.modes import PRIVATE, Modes, make_dirs
from anyserve_objects_fs.writing import PathConflict, stage

#: Temp files and orphaned sidecars younger than this are assumed to belong
#: to a write in progress (possibly in another process) and are left alone.
DEFAULT_TEMP_GRACE_SECONDS = 60.0

_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class FileStore:
    """The ``fs`` object backend; references look like ``fs://<key>``."""

    backend = "fs"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = False,
        temp_grace_seconds: float = DEFAULT_TEMP_GRACE_SECONDS,
        modes: Modes = PRIVATE,
    ) -> None:
        # A root that exists keeps its mode (it is the operator's); one made here gets ``modes.dir``.
        try:
            make_dirs(os.fspath(root), modes.dir)
        except OSError as exc:
            raise ConfigError(f"cannot use {os.fspath(root)!r} as the object store directory: {exc}") from None
        # Resolved once: the containment check compares real paths, so the
        # root itself may be reached through a symlink.
        self.root = os.path.realpath(root)
        self.fsync = fsync
        self.temp_grace_seconds = temp_grace_seconds
        self.modes = modes

    def __repr__(self) -> str:
        return f"FileStore({self.root!r})"

    # -- paths -------------------------------------------------------------

    def _path(self, key: str, ref: str) -> str:
        """Where ``key`` lives, refusing any key whose real path leaves the root.

        Keys are validated lexically already; this catches what a lexical
        check cannot see: a symlink planted inside the root (as a file or
        as a directory on the way) that points outside it.
        """
        path = os.path.join(self.root, *key.split("/"))
        if not layout.is_inside(self.root, os.path.realpath(path)):
            raise InvalidRequest(f"reference {ref} resolves outside the object store; refused")
        return path

    def _locate(self, ref: ObjRef | str) -> tuple[ObjRef, str]:
        parsed = as_ref(ref, self.backend)
        return parsed, self._path(parsed.key, str(parsed))

    @staticmethod
    def _missing(ref: ObjRef) -> ObjectNotFound:
        return ObjectNotFound(f"object {ref} not found (never created, deleted or expired)")

    # -- writing -----------------------------------------------------------

    def create(self, data: Data, key: str | None = None, content_type: str | None = None) -> ObjRef:
        """Store ``data`` under ``key`` (a fresh uuid4 hex when omitted), replacing any object there.

        Nested keys create their directories. A key whose prefix is already
        an object (``a`` exists, ``a/b`` asked for), or that names a
        directory of other objects, is an :class:`InvalidRequest`.
        """
        key = uuid.uuid4().hex if key is None else validate_key(key)
        if content_type is not None and not isinstance(content_type, str):
            raise InvalidRequest(f"content_type must be a string, got {type(content_type).__name__}")
        ref = ObjRef(self.backend, key, content_type=content_type)
        path = self._path(key, str(ref))
        if os.path.isdir(path):  # refuse before streaming what could be gigabytes
            raise InvalidRequest(f"cannot create {ref}: its key is a directory of other objects")
        directory = os.path.dirname(path)
        try:
            staged = stage(directory, data, fsync=self.fsync, modes=self.modes)
        except PathConflict:
            raise InvalidRequest(f"cannot create {ref}: part of its key is already an object") from None
        except BaseException:
            layout.prune_empty_dirs(self.root, directory)
            raise
        try:
            # The sidecar goes first: once the object is visible, its content
            # type is too (a racing rewrite of the same key may still mix them).
            self._write_meta(path, content_type)
            staged.commit(path)
        except IsADirectoryError:  # the directory appeared while we were writing
            staged.discard()
            _unlink(layout.meta_path(path))
            raise InvalidRequest(f"cannot create {ref}: its key is a directory of other objects") from None
        except BaseException:
            staged.discard()
            raise
        return ObjRef(self.backend, key, size=staged.size, content_type=content_type)

    def _write_meta(self, path: str, content_type: str | None) -> None:
        meta = layout.meta_path(path)
        if content_type is None:
            _unlink(meta)
            return
        sidecar = json.dumps({"content_type": content_type}).encode()
        staged = stage(os.path.dirname(path), sidecar, fsync=self.fsync, modes=self.modes)
        try:
            staged.commit(meta)
        except BaseException:
            staged.discard()
            raise

    @staticmethod
    def _read_meta(path: str) -> str | None:
        """The sidecar's content type; a missing or unreadable sidecar just means none.

        Plain JSON, read with ``json.loads`` and type-checked: nothing from
        disk is ever unpickled or evaluated.
        """
        try:
            with open(layout.meta_path(path), "rb") as fh:
                value = json.loads(fh.read(64 * 1024)).get("content_type")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    # -- reading -----------------------------------------------------------

    def get(self, ref: ObjRef | str) -> bytes:
        parsed, path = self._locate(ref)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except _MISSING:
            raise self._missing(parsed) from None

    def open(self, ref: ObjRef | str) -> BinaryIO:
        """A buffered binary file; it keeps reading the same object even if the key is rewritten meanwhile."""
        parsed, path = self._locate(ref)
        try:
            return open(path, "rb")
        except _MISSING:
            raise self._missing(parsed) from None

    def map(self, ref: ObjRef | str) -> memoryview:
        """A read-only memoryview of the object, backed by ``mmap``: no copy, pages load on demand.

        For large objects read at random or handed to code that takes
        buffers (``numpy.frombuffer``, ``torch.frombuffer``). The mapping
        outlives any later rewrite or delete of the key (those replace or
        unlink the file, never modify it in place) and is released when the
        last view of it is.
        """
        parsed, path = self._locate(ref)
        try:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size == 0:
                    return memoryview(b"")
                return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        except _MISSING:
            raise self._missing(parsed) from None

    def stat(self, ref: ObjRef | str) -> ObjRef:
        """The reference with its current size, content type and write time (``created``) filled in."""
        parsed, path = self._locate(ref)
        try:
            info = os.stat(path)
        except _MISSING:
            raise self._missing(parsed) from None
        if not S_ISREG(info.st_mode):
            raise self._missing(parsed)
        return ObjRef(
            self.backend, parsed.key, size=info.st_size, content_type=self._read_meta(path), created=info.st_mtime
        )

    def exists(self, ref: ObjRef | str) -> bool:
        _, path = self._locate(ref)
        return os.path.isfile(path)

    def list(self) -> list[ObjRef]:
        """Every object, with size, content type and write time; temp files and sidecars never appear."""
        refs = []
        for listing in layout.walk(self.root):
            for name, info in listing.objects.items():
                content_type = None
                if layout.META_PREFIX + name in listing.internal:
                    content_type = self._read_meta(os.path.join(listing.directory, name))
                refs.append(
                    ObjRef(
                        self.backend,
                        listing.prefix + name,
                        size=info.st_size,
                        content_type=content_type,
                        created=info.st_mtime,
                    )
                )
        return refs

    # -- removing ----------------------------------------------------------

    def delete(self, ref: ObjRef | str) -> bool:
        _, path = self._locate(ref)
        try:
            if S_ISDIR(os.lstat(path).st_mode):
                return False
            os.unlink(path)
        except _MISSING:
            return False
        _unlink(layout.meta_path(path))
        layout.prune_empty_dirs(self.root, os.path.dirname(path))
        return True

    def cleanup(self, max_age_seconds: float) -> int:
        """Delete objects last written more than ``max_age_seconds`` ago; return how many.

        Also removes leftovers of writes that died midway (temp files,
        sidecars without an object) once they are older than
        ``temp_grace_seconds``, and directories left empty. Safe to run
        while other processes read and write: an object rewritten while
        cleanup looks at it is kept.
        """
        now = time.time()
        cutoff = now - max_age_seconds
        stale = now - self.temp_grace_seconds
        removed = 0
        directories = []
        for listing in layout.walk(self.root):
            directories.append(listing.directory)
            for name, info in listing.objects.items():
                path = os.path.join(listing.directory, name)
                if info.st_mtime <= cutoff and _remove_if_older(path, cutoff):
                    _unlink(layout.meta_path(path))
                    removed += 1
            for name, info in listing.internal.items():
                owner = name.removeprefix(layout.META_PREFIX)
                is_live_meta = owner != name and owner in listing.objects
                if not is_live_meta and info.st_mtime <= stale:
                    _unlink(os.path.join(listing.directory, name))
        for directory in sorted(directories, key=len, reverse=True):
            layout.prune_empty_dirs(self.root, directory)
        return removed


def _unlink(path: str) -> None:
    with suppress(*_MISSING):
        os.unlink(path)


def _remove_if_older(path: str, cutoff: float) -> bool:
    """Remove the object at ``path`` only if it is still one written before ``cutoff``.

    A plain ``unlink`` could remove an object another process renamed into
    place after we looked at its mtime. Instead the file is first renamed to
    a tombstone (atomic: we now own whatever was there) and inspected; a
    fresh one is linked back unless an even newer one has arrived meanwhile.
    """
    tombstone = layout.tombstone_path(os.path.dirname(path))
    try:
        os.rename(path, tombstone)
    except _MISSING:
        return False
    try:
        if os.lstat(tombstone).st_mtime <= cutoff:
            return True
        try:
            os.link(tombstone, path)
        except FileExistsError:
            pass  # superseded by a newer write: the fresh object we took is obsolete anyway
        except OSError:  # no hard links here: put it back unless something newer arrived
            if not os.path.exists(path):
                os.rename(tombstone, path)
        return False
    finally:
        _unlink(tombstone)
