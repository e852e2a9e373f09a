"""Built-in ``mem://`` object backend: a dictionary in this process.

For tests and single-process use; objects vanish with the process and are
invisible to other replicas. Use a shared backend (``file://``) across
processes.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterable
from typing import BinaryIO

from anyserve.errors import InvalidRequest, ObjectNotFound
from anyserve.hookspecs import hookimpl
from anyserve.objects import Data, ObjRef, as_ref, validate_key
from anyserve.records import ObjectBackendSpec


def read_all(data: Data) -> bytes:
    """Bytes of any accepted ``Data`` form (bytes, chunk iterator, binary file)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, str):
        if hasattr(data, "read"):
            blob = data.read()  # type: ignore[union-attr]
            if isinstance(blob, bytes):
                return blob
        elif isinstance(data, Iterable):
            chunks = list(data)
            if all(isinstance(c, (bytes, bytearray, memoryview)) for c in chunks):
                return b"".join(chunks)
    raise InvalidRequest(
        f"cannot store a {type(data).__name__}: pass bytes, an iterator of bytes or a binary file (encode text first)"
    )


class MemoryStore:
    backend = "mem"

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float, str | None]] = {}
        self._lock = threading.Lock()

    def create(self, data: Data, key: str | None = None, content_type: str | None = None) -> ObjRef:
        key = validate_key(key) if key is not None else uuid.uuid4().hex
        blob = read_all(data)
        with self._lock:
            self._objects[key] = (blob, time.time(), content_type)
        return ObjRef(self.backend, key, size=len(blob), content_type=content_type)

    def _entry(self, ref: ObjRef | str) -> tuple[bytes, float, str | None]:
        parsed = as_ref(ref, self.backend)
        with self._lock:
            entry = self._objects.get(parsed.key)
        if entry is None:
            raise ObjectNotFound(f"object {parsed} not found (never created, deleted or expired)")
        return entry

    def get(self, ref: ObjRef | str) -> bytes:
        return self._entry(ref)[0]

    def open(self, ref: ObjRef | str) -> BinaryIO:
        return io.BytesIO(self._entry(ref)[0])

    def delete(self, ref: ObjRef | str) -> bool:
        parsed = as_ref(ref, self.backend)
        with self._lock:
            return self._objects.pop(parsed.key, None) is not None

    def exists(self, ref: ObjRef | str) -> bool:
        parsed = as_ref(ref, self.backend)
        with self._lock:
            return parsed.key in self._objects

    def list(self) -> list[ObjRef]:
        with self._lock:
            items = list(self._objects.items())
        return [ObjRef(self.backend, key, size=len(blob), content_type=ct) for key, (blob, _, ct) in items]

    def cleanup(self, max_age_seconds: float) -> int:
        cutoff = time.time() - max_age_seconds
        with self._lock:
            old = [key for key, (_, created, _) in self._objects.items() if created <= cutoff]
            for key in old:
                del self._objects[key]
        return len(old)


# One store per process, so every Context of a replica sees the same objects.
_STORE = MemoryStore()


@hookimpl
def anyserve_register_object_backends(register):
    register(
        ObjectBackendSpec(
            name="mem",
            schemes=("mem",),
            factory=lambda url, options: _STORE,
            description="in-process dictionary (tests, single process)",
        )
    )
