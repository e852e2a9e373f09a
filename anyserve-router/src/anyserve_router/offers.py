"""Validating what a replica registers: its id, its capabilities, its status and load reports.

Everything here runs once per registration, never per request, so it can
afford to be thorough: a bad registration rejected with a precise message is
far cheaper than a replica that silently never matches. It is also bounded
(:class:`RegistrationLimits`): every request scores the registered offers
and ``/registry`` lists them, so what one replica may register is capped, and
every value kept is one JSON can carry (no NaN, no infinity, no integer
wider than 64 bits), or the listings built from it would not be JSON.
Endpoints and links are checked in :mod:`anyserve_router.endpoints`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.candidates import COLD, FAILED, HOT, STARTING, STOPPING
from anyserve.capability import Capability
from anyserve_router.endpoints import (
    DEFAULT_POLICY,
    AddressPolicy,
    check_endpoint,
    check_engine_url,
    check_link,
    shown,
)
from anyserve_router.errors import InvalidRegistration

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ID_CHARS",
    "RUNTIME_KEYS",
    "AddressPolicy",
    "Offer",
    "RegistrationLimits",
    "check_capabilities",
    "check_endpoint",
    "check_engine_url",
    "check_in_flight",
    "check_link",
    "check_replica_id",
    "check_status",
]

#: Keys a capability dict may carry that describe the replica's runtime, not
#: what it serves; they are kept for routing and listings but never matched.
RUNTIME_KEYS = frozenset({"state", "stream"})
STATES = (HOT, STARTING, COLD, STOPPING, FAILED)
SCALARS = (str, int, float, bool)
MAX_ID_CHARS = 128
_ID = re.compile(r"[A-Za-z0-9._:@-]+")
#: Attributes one capability may have (``type``, ``model`` and a few more is the norm).
MAX_ATTRIBUTES = 32
#: Characters no key or string value may hold: C0 controls and DEL (NUL among them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Integers JSON readers agree on: signed and unsigned 64-bit.
_INT_RANGE = (-(2**63), 2**64 - 1)
#: A status document: how deep it may nest, how many values it may hold.
MAX_STATUS_DEPTH = 16
MAX_STATUS_VALUES = 10_000
#: Largest in-flight count a replica may report.
MAX_IN_FLIGHT = 2**31 - 1


@dataclass(frozen=True)
class RegistrationLimits:
    """What one registration may hold (``router.max_capabilities``, ``max_capability_chars``), where it may point,
    and how many replicas the registry holds (``router.max_replicas``)."""

    max_capabilities: int = 256
    max_chars: int = 256
    addresses: AddressPolicy = DEFAULT_POLICY
    max_replicas: int = 10_000

    @classmethod
    def of(cls, router: Any) -> RegistrationLimits:
        """From ``settings.router``; a bad ``allowed_endpoint_networks`` entry is a :class:`ConfigError`."""
        return cls(
            router.max_capabilities,
            router.max_capability_chars,
            AddressPolicy.of(router.allowed_endpoint_networks),
            router.max_replicas,
        )


DEFAULT_LIMITS = RegistrationLimits()


@dataclass(frozen=True)
class Offer:
    """One capability a replica offers, split into what is matched and runtime facts."""

    capability: Capability
    state: str = HOT
    runtime: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The capability as registered: attributes plus runtime keys (``state`` only when not hot)."""
        out = {**self.capability.to_dict(), **self.runtime}
        if self.state != HOT:
            out["state"] = self.state
        return out


def check_replica_id(replica_id: Any) -> str:
    """1-128 of ``[A-Za-z0-9._:@-]``: ids travel in URLs, headers and log lines as they are."""
    if not isinstance(replica_id, str):
        raise InvalidRegistration(
            f"replica_id must be a non-empty string, got {type(replica_id).__name__} {shown(replica_id)}"
        )
    if not replica_id or len(replica_id) > MAX_ID_CHARS or not _ID.fullmatch(replica_id):
        raise InvalidRegistration(
            f"replica_id must be a non-empty string of at most {MAX_ID_CHARS} letters, digits and . _ : @ - "
            f"(no whitespace or control characters), got {shown(replica_id)}"
        )
    return replica_id


def _check_text(text: str, where: str, what: str, limit: int) -> None:
    if len(text) > limit:
        raise InvalidRegistration(f"{where} has a {what} of {len(text)} characters; at most {limit} are accepted")
    if _CONTROL.search(text):
        raise InvalidRegistration(f"{where} has a {what} with control characters: {shown(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRegistration(f"{where} has a {what} that is not valid Unicode (a lone surrogate)") from None


def _check_number(value: int | float, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRegistration(f"{where} must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise InvalidRegistration(f"{where} is an integer wider than 64 bits")


def _check_offer(index: int, raw: Any, limits: RegistrationLimits) -> Offer:
    where = f"capabilities[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidRegistration(f"{where} must be an object of attributes, got {type(raw).__name__}")
    if len(raw) > MAX_ATTRIBUTES:
        raise InvalidRegistration(f"{where} has {len(raw)} attributes; at most {MAX_ATTRIBUTES} are accepted")
    attrs: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidRegistration(f"{where} has an empty or non-string key {shown(key)}")
        _check_text(key, where, "key", limits.max_chars)
        lower = key.lower()
        if lower in seen:
            # Capability keys are case-insensitive (they travel as HTTP headers).
            raise InvalidRegistration(f"{where} has keys {seen[lower]!r} and {key!r}, which differ only in case")
        seen[lower] = key
        if not isinstance(value, SCALARS):
            raise InvalidRegistration(
                f"{where}.{key} must be a string, number or boolean, got {type(value).__name__} {shown(value)}"
            )
        if isinstance(value, str):
            _check_text(value, f"{where}.{key}", "value", limits.max_chars)
        else:
            _check_number(value, f"{where}.{key}")
        (runtime if lower in RUNTIME_KEYS else attrs)[lower] = value
    state = runtime.pop("state", HOT)
    if state not in STATES:
        raise InvalidRegistration(f"{where}.state must be one of {', '.join(STATES)}, got {shown(state)}")
    if "stream" in runtime and not isinstance(runtime["stream"], bool):
        raise InvalidRegistration(f"{where}.stream must be true or false, got {shown(runtime['stream'])}")
    if not attrs:
        raise InvalidRegistration(
            f"{where} has no attributes to match besides runtime keys ({', '.join(sorted(RUNTIME_KEYS))}); "
            'a capability needs at least one, e.g. {"type": "chat"}'
        )
    return Offer(Capability(attrs), state, runtime)


def check_capabilities(capabilities: Any, limits: RegistrationLimits = DEFAULT_LIMITS) -> tuple[Offer, ...]:
    """A list (possibly empty: a replica whose workers are not up yet) of at most ``max_capabilities`` objects."""
    if isinstance(capabilities, (str, bytes, Mapping)) or not isinstance(capabilities, (list, tuple)):
        raise InvalidRegistration(
            f"capabilities must be a list of objects, got {type(capabilities).__name__}; "
            'e.g. [{"type": "chat", "model": "llama-70b"}]'
        )
    if len(capabilities) > limits.max_capabilities:
        raise InvalidRegistration(
            f"capabilities lists {len(capabilities)} entries; at most {limits.max_capabilities} are accepted "
            "(router.max_capabilities)"
        )
    return tuple(_check_offer(i, raw, limits) for i, raw in enumerate(capabilities))


def check_status(status: Any) -> dict[str, Any] | None:
    """The replica's status document: a JSON object of plain JSON values, bounded in depth and size."""
    if status is None:
        return None
    if not isinstance(status, dict):
        raise InvalidRegistration(f"status must be a JSON object, got {type(status).__name__}")
    count = 0
    pending: list[tuple[Any, str, int]] = [(status, "status", 0)]
    while pending:
        value, where, depth = pending.pop()
        count += 1
        if count > MAX_STATUS_VALUES:
            raise InvalidRegistration(f"status holds more than {MAX_STATUS_VALUES} values")
        if depth > MAX_STATUS_DEPTH:
            raise InvalidRegistration(f"status nests deeper than {MAX_STATUS_DEPTH} levels (at {where})")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidRegistration(f"{where} has a non-string key {shown(key)}")
                _check_text(key, where, "key", 1024)
                pending.append((item, f"{where}.{key[:40]}", depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRegistration(f"{where} is not valid Unicode (a lone surrogate)") from None
        elif isinstance(value, (int, float)):
            _check_number(value, where)
        elif value is not None:
            raise InvalidRegistration(f"{where} must be a JSON value, got {type(value).__name__}")
    return status


def check_in_flight(in_flight: Any) -> int:
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or not 0 <= in_flight <= MAX_IN_FLIGHT:
        raise InvalidRegistration(f"in_flight must be an integer from 0 to {MAX_IN_FLIGHT}, got {shown(in_flight)}")
    return in_flight
