"""Atomic, streaming writes: a temp file beside the target, then ``os.replace``.

The temp file lives in the target's own directory, so the final rename never
crosses a filesystem and is atomic: a reader in any process opens either the
previous object or the complete new one, never a prefix. Data is written
chunk by chunk as it arrives, so a large object is never held in memory
twice (not even once, when it comes from an iterator or a file).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from anyserve.errors import InvalidRequest, ResourceExhausted
from anyserve.objects import Data
from anyserve_objects_fs.layout import temp_path
from anyserve_objects_fs.modes import PRIVATE, Modes, make_dirs

#: How much is read at a time from a file object.
CHUNK_SIZE = 1 << 20

#: A directory may be pruned by a concurrent delete/cleanup between
#: ``makedirs`` and opening the temp file in it; this many tries is plenty.
_OPEN_ATTEMPTS = 8

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class PathConflict(Exception):
    """The target's directory cannot be created: a prefix of the key is an object."""


def chunks(data: Data) -> Iterator[bytes | bytearray | memoryview]:
    """The accepted ``Data`` forms as a stream of bytes-like chunks, checked as they come."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield data
        return
    if isinstance(data, str):
        raise InvalidRequest("cannot store a str: encode it to bytes first")
    read = getattr(data, "read", None)
    if callable(read):
        while chunk := read(CHUNK_SIZE):
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise InvalidRequest(f"file object returned {type(chunk).__name__}: open it in binary mode")
            yield chunk
        return
    if not isinstance(data, Iterable):
        raise InvalidRequest(f"cannot store a {type(data).__name__}: pass bytes, an iterator of bytes or a binary file")
    for index, chunk in enumerate(data):
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InvalidRequest(f"chunk #{index} is a {type(chunk).__name__}, expected bytes")
        yield chunk


def _open_temp(directory: str, modes: Modes) -> tuple[int, str]:
    for attempt in range(_OPEN_ATTEMPTS):
        path = temp_path(directory)
        try:
            make_dirs(directory, modes.dir)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, modes.file)
        except (FileExistsError, NotADirectoryError) as exc:
            raise PathConflict(str(exc)) from exc
        except FileNotFoundError:  # a parent was pruned under us: build it again
            if attempt == _OPEN_ATTEMPTS - 1:
                raise
            continue
        try:
            os.fchmod(fd, modes.file)  # exactly, whatever the umask
        except BaseException:
            os.close(fd)
            _discard(path)
            raise
        return fd, path
    raise AssertionError("unreachable")


def _discard(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Staged:
    """A completely written temp file, waiting to be renamed into place (or discarded)."""

    def __init__(self, path: str, size: int, fsync: bool) -> None:
        self.path = path
        self.size = size
        self._fsync = fsync

    def commit(self, target: str) -> None:
        """Publish atomically under ``target``; the temp name disappears."""
        os.replace(self.path, target)
        if self._fsync:
            _fsync_dir(os.path.dirname(target))

    def discard(self) -> None:
        _discard(self.path)


def stage(directory: str, data: Data, *, fsync: bool = False, modes: Modes = PRIVATE) -> Staged:
    """Write ``data`` to a new temp file in ``directory`` (created as needed), with ``modes``.

    Any failure — the caller's iterator raising, a full disk, an interrupt —
    removes the temp file before the error propagates, so a failed write
    leaves nothing behind. A full disk becomes
    :class:`~anyserve.errors.ResourceExhausted`; the caller's own exceptions
    pass through unchanged.
    """
    fd, path = _open_temp(directory, modes)
    size = 0
    try:
        with _disk_errors(), os.fdopen(fd, "wb") as fh:
            for chunk in chunks(data):
                fh.write(chunk)
                size += memoryview(chunk).nbytes
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    except BaseException:
        _discard(path)
        raise
    return Staged(path, size, fsync)


@contextmanager
def _disk_errors() -> Iterator[None]:
    """A full disk or quota is a limit the caller hit, not an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise ResourceExhausted(f"object store is full or over quota: {exc.strerror}") from exc
        raise
