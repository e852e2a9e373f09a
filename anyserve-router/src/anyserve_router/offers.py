"""Validating what a replica registers: its id, its endpoint, the capabilities it offers.

Everything here runs once per registration, never per request, so it can
afford to be thorough: a bad registration rejected with a precise message is
far cheaper than a replica that silently never matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.candidates import COLD, FAILED, HOT, STARTING, STOPPING
from anyserve.capability import Capability
from anyserve_router.errors import InvalidRegistration

#: Keys a capability dict may carry that describe the replica's runtime, not
#: what it serves; they are kept for routing and listings but never matched.
RUNTIME_KEYS = frozenset({"state", "stream"})
STATES = (HOT, STARTING, COLD, STOPPING, FAILED)
SCALARS = (str, int, float, bool)


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
    if not isinstance(replica_id, str) or not replica_id.strip():
        raise InvalidRegistration(f"replica id must be a non-empty string, got {replica_id!r}")
    if replica_id != replica_id.strip() or any(ch.isspace() for ch in replica_id):
        raise InvalidRegistration(f"replica id must not contain whitespace, got {replica_id!r}")
    return replica_id


def check_endpoint(endpoint: Any) -> str:
    """``host:port`` as gRPC dials it; IPv6 hosts in brackets (``[::1]:50051``)."""
    shape = "expected host:port, e.g. 10.0.0.5:50051 or [::1]:50051"
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidRegistration(f"endpoint must be a string host:port, got {endpoint!r}")
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host:
        raise InvalidRegistration(f"endpoint {endpoint!r} has no host:port; {shape}")
    if "://" in endpoint or "/" in host or any(ch.isspace() for ch in endpoint):
        raise InvalidRegistration(f"endpoint {endpoint!r} is not a bare host:port (no scheme or path); {shape}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or (":" in host and bare == host) or "[" in bare or "]" in bare:
        raise InvalidRegistration(f"endpoint {endpoint!r} has an invalid host; {shape}")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise InvalidRegistration(f"endpoint {endpoint!r} has an invalid port {port!r} (1-65535); {shape}")
    return endpoint


def check_engine_url(url: Any) -> str:
    """An OpenAI-compatible engine's base URL: ``http(s)://host:port`` with no path (``/v1`` is added per call)."""
    shape = "expected http://host:port, e.g. http://127.0.0.1:8000"
    if not isinstance(url, str) or not url:
        raise InvalidRegistration(f"engine URL must be a string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise InvalidRegistration(f"engine URL {url!r} must start with http:// or https://; {shape}")
    rest = rest.rstrip("/").removesuffix("/v1")
    if "/" in rest or "?" in rest or "#" in rest:
        raise InvalidRegistration(f"engine URL {url!r} must not have a path (other than /v1); {shape}")
    check_endpoint(rest)
    return f"{scheme}://{rest}"


def check_link(link: Any) -> str | None:
    """``<transport>://host:port``, the replica's router link; ``None`` when it serves none."""
    if link is None:
        return None
    shape = "expected <transport>://host:port, e.g. tcp://10.0.0.5:50052"
    if not isinstance(link, str):
        raise InvalidRegistration(f"link must be a string, got {type(link).__name__}; {shape}")
    scheme, sep, address = link.partition("://")
    if not sep or not scheme.isidentifier():
        raise InvalidRegistration(f"link {link!r} names no transport; {shape}")
    try:
        check_endpoint(address)
    except InvalidRegistration as exc:
        raise InvalidRegistration(f"link {link!r}: {exc}") from None
    return link


def _check_offer(index: int, raw: Any) -> Offer:
    where = f"capabilities[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidRegistration(f"{where} must be an object of attributes, got {type(raw).__name__}")
    attrs: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidRegistration(f"{where} has an empty or non-string key {key!r}")
        lower = key.lower()
        if lower in seen:
            # Capability keys are case-insensitive (they travel as HTTP headers).
            raise InvalidRegistration(f"{where} has keys {seen[lower]!r} and {key!r}, which differ only in case")
        seen[lower] = key
        if not isinstance(value, SCALARS):
            raise InvalidRegistration(
                f"{where}.{key} must be a string, number or boolean, got {type(value).__name__} {value!r}"
            )
        (runtime if lower in RUNTIME_KEYS else attrs)[lower] = value
    state = runtime.pop("state", HOT)
    if state not in STATES:
        raise InvalidRegistration(f"{where}.state must be one of {', '.join(STATES)}, got {state!r}")
    if "stream" in runtime and not isinstance(runtime["stream"], bool):
        raise InvalidRegistration(f"{where}.stream must be true or false, got {runtime['stream']!r}")
    if not attrs:
        raise InvalidRegistration(
            f"{where} has no attributes to match besides runtime keys ({', '.join(sorted(RUNTIME_KEYS))}); "
            'a capability needs at least one, e.g. {"type": "chat"}'
        )
    return Offer(Capability(attrs), state, runtime)


def check_capabilities(capabilities: Any) -> tuple[Offer, ...]:
    """A list (possibly empty: a replica whose workers are not up yet) of capability objects."""
    if isinstance(capabilities, (str, bytes, Mapping)) or not isinstance(capabilities, (list, tuple)):
        raise InvalidRegistration(
            f"capabilities must be a list of objects, got {type(capabilities).__name__}; "
            'e.g. [{"type": "chat", "model": "llama-70b"}]'
        )
    return tuple(_check_offer(i, raw) for i, raw in enumerate(capabilities))


def check_in_flight(in_flight: Any) -> int:
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 0:
        raise InvalidRegistration(f"in_flight must be a non-negative integer, got {in_flight!r}")
    return in_flight
