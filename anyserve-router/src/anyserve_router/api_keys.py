"""API keys for the router's data plane, each optionally limited to some capabilities.

With no key configured the data plane is open, as it always was, and nothing
here runs. With keys (``[auth] api_keys_file``, ``$ANYSERVE_API_KEYS``) every
request through ``/infer``, ``/v2``, ``/v1`` and the gRPC front needs one,
as ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``. A key listed
with capabilities may call only queries that include one of them: key A with
``[{type = "embed"}]`` may ask ``{type: embed, model: x}`` but not
``{type: chat}``. Cluster members (the cluster or admin token: replicas
delegating back) may call everything.

The key file is TOML::

    [[keys]]
    name = "search-team"
    sha256 = "9f86d081884c7d65..."         # or: key = "sk-..."; prefer the digest
    capabilities = [{type = "embed"}]

Keys are kept as SHA-256 digests only and looked up by digest, so neither
the file nor memory needs the keys themselves, and no comparison leaks how
much of a wrong key was right. Refusals are 401 (no key, or not one of
these) and 403 (a key not allowed this capability), each front answering in
its own error shape.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyserve.capability import normalize_key, normalize_value
from anyserve.config import Settings
from anyserve.credentials import Credentials
from anyserve.errors import ConfigError, PermissionDenied, Unauthenticated

_HOW = "send one as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'"


@dataclass(frozen=True)
class ApiKey:
    name: str
    #: Queries this key may call, as capability patterns; empty: every capability.
    capabilities: tuple[Mapping[str, str], ...] = ()

    def allows(self, query: Mapping[str, str]) -> bool:
        return not self.capabilities or any(_includes(query, pattern) for pattern in self.capabilities)


def _includes(query: Mapping[str, str], pattern: Mapping[str, str]) -> bool:
    return all(query.get(key) == value for key, value in pattern.items())


#: What cluster members get: everything.
MEMBER = ApiKey("cluster member")


#: Valid keys remembered as presented (see ``ApiKeys._valid``); past this many, the rest are digested each time.
MAX_REMEMBERED = 1024


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The configured keys, by digest, and the cluster's tokens (members pass as :data:`MEMBER`)."""

    def __init__(self, keys: Mapping[bytes, ApiKey], credentials: Credentials) -> None:
        self.keys = dict(keys)
        self.credentials = credentials
        #: Keys presented and found valid, as presented: a client sends the same key with every request, and a
        #: dict lookup costs less than its digest. Bounded; an invalid key is never kept, so strangers cannot
        #: fill it.
        self._valid: dict[str, ApiKey] = {}

    @classmethod
    def from_settings(cls, settings: Settings, credentials: Credentials) -> ApiKeys | None:
        """The keys configured, or None when there are none (the data plane is open)."""
        keys: dict[bytes, ApiKey] = {}
        if settings.auth.api_keys:
            for i, key in enumerate(k.strip() for k in settings.auth.api_keys.split(",")):
                if key:
                    keys[digest(key)] = ApiKey(f"$ANYSERVE_API_KEYS #{i + 1}")
        if settings.auth.api_keys_file:
            keys.update(read_key_file(Path(settings.auth.api_keys_file).expanduser()))
        return cls(keys, credentials) if keys else None

    def authenticate(self, credential: str | None) -> ApiKey:
        """The key ``credential`` is, or :class:`Unauthenticated`."""
        if credential is None:
            raise Unauthenticated(f"this router needs an API key: {_HOW}")
        found = self._valid.get(credential)
        if found is not None:
            return found
        found = self.keys.get(digest(credential))
        if found is not None:
            if len(self._valid) < MAX_REMEMBERED:
                self._valid[credential] = found
            return found
        if self.credentials.cluster is not None and self.credentials.is_cluster(credential):
            return MEMBER
        raise Unauthenticated(f"the API key is not valid here: {_HOW}")

    def check(self, credential: str | None, query: Mapping[str, str]) -> ApiKey:
        """Authenticate, then refuse a query the key is not allowed (:class:`PermissionDenied`)."""
        # Every routed request passes here: a key seen before, allowed everything, is two lookups.
        key = self._valid.get(credential) if credential is not None else None
        if key is None:
            key = self.authenticate(credential)
        if key.capabilities and not key.allows(query):
            allowed = "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in key.capabilities)
            raise PermissionDenied(f"API key {key.name!r} may call only capabilities matching {allowed}")
        return key


def read_key_file(path: Path) -> dict[bytes, ApiKey]:
    """``[[keys]]`` entries from a TOML file, each checked, with errors naming the entry."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected [[keys]] entries, each with key or sha256")
    keys: dict[bytes, ApiKey] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: keys[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} is not a table")
        unknown = set(entry) - {"name", "key", "sha256", "capabilities"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        keys[_entry_digest(entry, where)] = ApiKey(
            str(entry.get("name") or f"keys[{i}]"), _patterns(entry.get("capabilities", []), where)
        )
    return keys


def _entry_digest(entry: Mapping[str, Any], where: str) -> bytes:
    if ("key" in entry) == ("sha256" in entry):
        raise ConfigError(f"{where}: give exactly one of key or sha256")
    if "key" in entry:
        if not isinstance(entry["key"], str) or len(entry["key"]) < 16:
            raise ConfigError(f"{where}: key must be a string of at least 16 characters")
        return digest(entry["key"])
    try:
        raw = bytes.fromhex(str(entry["sha256"]))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{where}: sha256 must be 64 hex digits (sha256sum of the key)")
    return raw


def _patterns(raw: Any, where: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(raw, list) or not all(isinstance(p, dict) and p for p in raw):
        raise ConfigError(f'{where}: capabilities must be a list of non-empty tables, e.g. [{{type = "embed"}}]')
    return tuple({normalize_key(k): normalize_value(v) for k, v in p.items()} for p in raw)
