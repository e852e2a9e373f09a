"""Object references and the object-store contract.

Big data travels by reference: a request carries an :class:`ObjRef`, the
receiving replica resolves it through its configured store. A reference is a
small value whose string form names its backend and key
(``fs://0b3c…``), so it survives any wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, runtime_checkable

from anyserve.errors import InvalidRequest
from anyserve.protocol.names import OBJREF_PARAMETER

#: The tensor/request parameter an ObjRef rides in on the KServe wire.
#: Request parameters named ``anyserve.objref.<name>`` carry reference ``<name>``.
OBJREF_PARAMETER_PREFIX = OBJREF_PARAMETER + "."


@dataclass(frozen=True)
class ObjRef:
    """A reference to an object held by an object-store backend."""

    backend: str
    key: str
    size: int | None = None
    content_type: str | None = None
    #: When the object was written (seconds since the epoch), where the store
    #: says (``list``, ``stat``); metadata, not identity, so not compared.
    created: float | None = field(default=None, compare=False)

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
        if self.created is not None:
            data["created"] = self.created
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjRef:
        try:
            return cls(
                backend=str(data["backend"]),
                key=str(data["key"]),
                size=data.get("size"),
                content_type=data.get("content_type"),
                created=data.get("created"),
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
        """Every object currently held, with its size (and ``created`` where the backend knows it)."""
        ...

    def cleanup(self, max_age_seconds: float) -> int:
        """Delete objects written more than ``max_age_seconds`` ago; return how many.

        A replica calls it in the background every ``objects.gc_interval_seconds``
        with ``objects.ttl_seconds``; ``anyserve objects gc`` calls it by hand.
        """
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


# -- references in request parameters -----------------------------------------


def ref_parameter_name(name: str) -> str:
    """The wire name of request parameter ``name`` when its value is an ObjRef.

    ``anyserve.objref`` itself (a request's one reference, the bare form a
    plain KServe client sends) and names already carrying the prefix stay as
    they are; any other ``name`` becomes ``anyserve.objref.<name>``.
    """
    if name == OBJREF_PARAMETER or name.startswith(OBJREF_PARAMETER_PREFIX):
        return name
    return OBJREF_PARAMETER_PREFIX + name


def encode_ref_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Request parameters ready for the wire: ObjRef values as their string form under a ref name.

    ``{"source": ref, "mode": "fast"}`` becomes
    ``{"anyserve.objref.source": "fs://…", "mode": "fast"}``; the receiver's
    :func:`decode_ref_parameters` gives ``{"source": ObjRef, "mode": "fast"}``
    back. A ref-named parameter whose value is not a reference is refused.
    """
    out: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if isinstance(value, ObjRef):
            wire = ref_parameter_name(name)
            if wire in out:
                raise InvalidRequest(f"parameters {name!r} and {wire!r} would both travel as {wire!r}")
            out[wire] = value.to_string()
        elif name == OBJREF_PARAMETER or name.startswith(OBJREF_PARAMETER_PREFIX):
            if not isinstance(value, str):
                raise InvalidRequest(f"parameter {name!r} must hold an object reference, got {type(value).__name__}")
            out[name] = ObjRef.from_string(value).to_string()
        else:
            if name in out:
                raise InvalidRequest(f"parameter {name!r} is given twice (once as an object reference)")
            out[name] = value
    return out


def decode_ref_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Decoded request parameters with references given back as ObjRef.

    ``anyserve.objref.<name>`` becomes ``<name>`` (an ObjRef); a bare
    ``anyserve.objref`` keeps its name. A ref parameter that is not a string
    in ``<backend>://<key>`` form is an :class:`InvalidRequest` naming it.
    """
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        if name == OBJREF_PARAMETER or name.startswith(OBJREF_PARAMETER_PREFIX):
            if not isinstance(value, str):
                raise InvalidRequest(f"parameter {name!r} must be a string object reference, got {value!r}")
            try:
                ref = ObjRef.from_string(value)
            except InvalidRequest as exc:
                raise InvalidRequest(f"parameter {name!r}: {exc.message}") from None
            plain = name.removeprefix(OBJREF_PARAMETER_PREFIX) or name
        else:
            plain, ref = name, value
        if plain in out:
            raise InvalidRequest(f"parameter {plain!r} is given twice: plain and as {OBJREF_PARAMETER_PREFIX}{plain}")
        out[plain] = ref
    return out


# -- pickle, only on request ----------------------------------------------------

#: Content type to store pickled objects under, so readers can tell.
PICKLE_CONTENT_TYPE = "application/x-python-pickle"

_UNTRUSTED_PICKLE = (
    "refusing to unpickle: unpickling runs code chosen by whoever wrote the data, and objects "
    "and references arrive from other replicas and clients. anyserve never unpickles implicitly; "
    "if you wrote this data yourself or trust every writer of the object store, call "
    "loads_pickle(data, trusted=True) (or store bytes, JSON or arrays instead)"
)


def dumps_pickle(obj: Any, *, protocol: int | None = None) -> bytes:
    """``pickle.dumps(obj)``: bytes to ``store.create(..., content_type=PICKLE_CONTENT_TYPE)``.

    Writing is harmless; reading back needs :func:`loads_pickle` with
    ``trusted=True``.
    """
    import pickle

    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL if protocol is None else protocol)


def loads_pickle(data: bytes | bytearray | memoryview, *, trusted: bool = False) -> Any:
    """Unpickle ``data`` only when the caller says it is trusted (``trusted=True``).

    Without it, :class:`InvalidRequest` explains why: a pickle can run any
    code when loaded, and stored data or references may come from any
    replica or client. Only the literal ``True`` opts in.
    """
    if trusted is not True:
        raise InvalidRequest(_UNTRUSTED_PICKLE)
    import pickle

    return pickle.loads(data)
