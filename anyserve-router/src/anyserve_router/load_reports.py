"""Validating the load signals a replica reports with its heartbeats (docs/routing.md, "Load signals").

A heartbeat may carry ``signals``: the replica's own (``draining``,
``queued``, ``in_flight``, ...) and an ``offers`` list of per-offer ones,
each naming the offer by its capability and ``stream``. Routing reads them
on every request without a lock, so what is kept must be plain, bounded
and well-typed: each name has one kind (a count, seconds, a fraction, a
flag or a list of names), numbers are finite and non-negative, and names
nobody reads are dropped rather than stored. A bad value fails the whole
report with a message naming the field, before anything is kept: routing
on half a report would be worse than routing on the last whole one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from anyserve.capability import Capability
from anyserve_router.endpoints import shown
from anyserve_router.errors import InvalidRegistration
from anyserve_router.offers import MAX_ATTRIBUTES, RUNTIME_KEYS, SCALARS, RegistrationLimits

#: (capability, stream) -> that offer's signals, the key selection looks an offer's signals up by.
OfferKey = tuple[Capability, bool]
#: Largest count (requests queued, in flight, slots) a report may carry.
MAX_COUNT = 2**31 - 1
#: Longest duration a report may carry, in seconds (a year: anything longer is a broken clock).
MAX_SECONDS = 365 * 24 * 3600.0
#: Longest piggy-backed load value read: two counts and a comma.
PIGGY_BACK_CHARS = 24
#: Names a ``resident`` or ``adapters`` list may hold.
MAX_NAMES = 256


def _count(value: Any, where: str, limits: RegistrationLimits) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidRegistration(f"{where} must be an integer from 0 to {MAX_COUNT}, got {shown(value)}")
    return value


def _seconds(value: Any, where: str, limits: RegistrationLimits) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRegistration(f"{where} must be a finite number of seconds, got {shown(value)}")
    if not 0 <= value <= MAX_SECONDS:
        raise InvalidRegistration(f"{where} must be from 0 to {MAX_SECONDS:g} seconds, got {shown(value)}")
    return float(value)


def _fraction(value: Any, where: str, limits: RegistrationLimits) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidRegistration(f"{where} must be a number from 0 to 1, got {shown(value)}")
    return float(value)


def _flag(value: Any, where: str, limits: RegistrationLimits) -> bool:
    if not isinstance(value, bool):
        raise InvalidRegistration(f"{where} must be true or false, got {shown(value)}")
    return value


def _names(value: Any, where: str, limits: RegistrationLimits) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_NAMES:
        raise InvalidRegistration(f"{where} must be a list of at most {MAX_NAMES} names, got {shown(value)}")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name or len(name) > limits.max_chars:
            raise InvalidRegistration(
                f"{where}[{i}] must be a non-empty string of at most {limits.max_chars} characters, got {shown(name)}"
            )
    return list(value)


Check = Callable[[Any, str, RegistrationLimits], Any]
#: What a replica may say about itself as a whole.
REPLICA_SIGNALS: dict[str, Check] = {
    "draining": _flag,
    "queued": _count,
    "in_flight": _count,
    "running": _count,
    "slots": _count,
    "cache_use": _fraction,
    "resident": _names,
    "adapters": _names,
}
#: What it may say about one offer.
OFFER_SIGNALS: dict[str, Check] = {
    "in_flight": _count,
    "queued": _count,
    "slots": _count,
    "service_seconds": _seconds,
    "load_seconds": _seconds,
    "fits": _flag,
    "resident": _names,
    "adapters": _names,
}


def _known(raw: Mapping[str, Any], checks: dict[str, Check], where: str, limits: RegistrationLimits) -> dict[str, Any]:
    """The names ``checks`` knows, each checked; the others left out."""
    return {name: check(raw[name], f"{where}.{name}", limits) for name, check in checks.items() if name in raw}


def _capability(raw: Any, where: str, limits: RegistrationLimits) -> tuple[Capability, Any]:
    """The offer a report names, and the ``stream`` its capability carries, if any.

    Lighter than a registration's checks, and on every heartbeat: the
    capability is only looked up among those the replica registered (which
    were checked then) and never kept, so it need only be a small object of
    plain values.
    """
    if not isinstance(raw, dict) or not 0 < len(raw) <= MAX_ATTRIBUTES:
        raise InvalidRegistration(
            f"{where} must be the offer's capability: an object of 1 to {MAX_ATTRIBUTES} attributes, got {shown(raw)}"
        )
    attrs: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key or len(key) > limits.max_chars:
            raise InvalidRegistration(f"{where} has a key that is not a short non-empty string: {shown(key)}")
        if not isinstance(value, SCALARS) or (isinstance(value, str) and len(value) > limits.max_chars):
            raise InvalidRegistration(f"{where}.{key[:40]} must be a short string, a number or a boolean")
        lower = key.lower()
        (runtime if lower in RUNTIME_KEYS else attrs)[lower] = value
    if not attrs:
        raise InvalidRegistration(f"{where} has no attributes besides runtime keys ({', '.join(sorted(RUNTIME_KEYS))})")
    return Capability(attrs), runtime.get("stream", False)


def _offer(index: int, raw: Any, limits: RegistrationLimits) -> tuple[OfferKey, dict[str, Any]]:
    where = f"signals.offers[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRegistration(f"{where} must be an object, got {type(raw).__name__}")
    capability, stream = _capability(raw.get("capability"), f"{where}.capability", limits)
    stream = _flag(raw.get("stream", stream), f"{where}.stream", limits)
    return (capability, stream), _known(raw, OFFER_SIGNALS, where, limits)


def check_signals(raw: Any, limits: RegistrationLimits) -> tuple[dict[str, Any], dict[OfferKey, dict[str, Any]]]:
    """A heartbeat's ``signals``: the replica's, and each offer's keyed by (capability, stream).

    At most ``limits.max_capabilities`` offers, as a registration; raises
    :class:`InvalidRegistration` naming the first bad field.
    """
    if not isinstance(raw, dict):
        raise InvalidRegistration(f"signals must be a JSON object, got {type(raw).__name__}")
    offers = raw.get("offers", [])
    if not isinstance(offers, list):
        raise InvalidRegistration(f"signals.offers must be a list, got {type(offers).__name__}")
    if len(offers) > limits.max_capabilities:
        raise InvalidRegistration(
            f"signals.offers lists {len(offers)} entries; at most {limits.max_capabilities} are accepted "
            "(router.max_capabilities)"
        )
    replica = _known(raw, REPLICA_SIGNALS, "signals", limits)
    return replica, dict(_offer(i, entry, limits) for i, entry in enumerate(offers))


def listing(offer_signals: Mapping[OfferKey, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-offer signals as ``GET /registry`` shows them: each with its capability and ``stream``."""
    return [
        {"capability": capability.to_dict(), "stream": stream, **signals}
        for (capability, stream), signals in offer_signals.items()
    ]


def piggy_backed(value: str) -> tuple[int, int] | None:
    """``queued,in_flight`` as a replica puts them on a response; None when it is not two small counts.

    Read on every response that carries it, so it is kept to a split and two ``int`` calls.
    """
    if len(value) > PIGGY_BACK_CHARS:
        return None
    queued, _, in_flight = value.partition(",")
    try:
        pair = int(queued), int(in_flight)
    except ValueError:
        return None
    return pair if 0 <= pair[0] <= MAX_COUNT and 0 <= pair[1] <= MAX_COUNT else None
