"""Object references and the object-store contract.

Big data travels by reference: a request carries an :class:`ObjRef`, the
receiving replica resolves it through its configured store. A reference is a
small value whose string form names its backend and key
(``fs://0b3c…``), so it survives any wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, runtime_checkable

from anyserve.errors import InvalidRequest

#: The tensor/request parameter an ObjRef rides in on the KServe wire.
OBJREF_PARAMETER = "anyserve.objref"


@dataclass(frozen=True)
class ObjRef:
    """A reference to an object held by an object-store backend."""

    backend: str
    key: str
    size: int | None = None
    content_type: str | None = None

    def to_string(self) -> str:
        return f"{self.backend}://{self.key}"

    @classmethod
    def from_string(cls, text: str) -> ObjRef:
        backend, sep, key = text.partition("://")
        if not sep or not backend or not key:
            raise InvalidRequest(f"not an object reference: {text!r} (expected '<backend>://<key>')")
        return cls(backend=backend, key=key)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend, "key": self.key}
        if self.size is not None:
            data["size"] = self.size
        if self.content_type is not None:
            data["content_type"] = self.content_type
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjRef:
        try:
            return cls(
                backend=str(data["backend"]),
                key=str(data["key"]),
                size=data.get("size"),
                content_type=data.get("content_type"),
            )
        except KeyError as exc:
            raise InvalidRequest(f"object reference dict lacks {exc.args[0]!r}") from None

    def __str__(self) -> str:
        return self.to_string()


Data = bytes | bytearray | memoryview | Iterable[bytes] | BinaryIO


@runtime_checkable
class ObjectStore(Protocol):
    """A place objects live; one instance per configured ``objects.url``.

    Keys are validated by the store: a key that would escape the store
    (``../``, absolute paths, separators it does not allow) raises
    :class:`anyserve.errors.InvalidRequest`; a missing or expired object
    raises :class:`anyserve.errors.ObjectNotFound` naming the reference.
    """

    backend: str

    def create(self, data: Data, key: str | None = None, content_type: str | None = None) -> ObjRef:
        """Store ``data`` (bytes, an iterator of chunks or a binary file) atomically."""
        ...

    def get(self, ref: ObjRef | str) -> bytes:
        """The whole object's bytes."""
        ...

    def open(self, ref: ObjRef | str) -> BinaryIO:
        """A readable binary file for large objects."""
        ...

    def delete(self, ref: ObjRef | str) -> bool:
        """Remove the object; False when it did not exist."""
        ...

    def exists(self, ref: ObjRef | str) -> bool: ...

    def list(self) -> list[ObjRef]:
        """Every object currently held, with its size."""
        ...

    def cleanup(self, max_age_seconds: float) -> int:
        """Delete objects older than ``max_age_seconds``; return how many."""
        ...


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")
MAX_KEY_LENGTH = 200


def validate_key(key: str) -> str:
    """Refuse keys that could name something outside a store.

    Keys arrive from other replicas, so they are checked against a closed
    alphabet: relative ``/``-separated segments of ``[A-Za-z0-9._-]``, no
    empty, ``.`` or ``..`` segment, no leading ``/``.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"object key must be 1..{MAX_KEY_LENGTH} characters, got {len(key)}")
    if not set(key) <= _KEY_CHARS:
        bad = "".join(sorted(set(key) - _KEY_CHARS))
        raise InvalidRequest(f"object key {key!r} contains characters outside [A-Za-z0-9._-/]: {bad!r}")
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidRequest(f"object key {key!r} escapes the object store (absolute path, empty, '.' or '..' segment)")
    return key


def as_ref(ref: ObjRef | str, backend: str) -> ObjRef:
    """Accept a reference or its string form and check it belongs to ``backend``."""
    parsed = ObjRef.from_string(ref) if isinstance(ref, str) else ref
    if parsed.backend != backend:
        raise InvalidRequest(f"reference {parsed} belongs to backend {parsed.backend!r}, not {backend!r}")
    validate_key(parsed.key)
    return parsed
