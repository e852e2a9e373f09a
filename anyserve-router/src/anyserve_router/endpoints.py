"""Which ``host:port`` a replica or engine may register: the shape gRPC dials, and the addresses refused.

The router connects to whatever is registered, so a registration is a way
to make the router open connections: to a cloud metadata service
(169.254.169.254), to every host of a multicast group, to "this host" under
an unspecified address. Those are refused unless
``router.allowed_endpoint_networks`` lets some of them in. Loopback and
private networks stay allowed: they are where replicas live.

Hostnames are checked for syntax and against a few well-known metadata
names, but not resolved: resolving here would block the event loop and
could answer differently when gRPC resolves it later. Who may register at
all is the cluster token's business (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from anyserve.errors import ConfigError
from anyserve_router.errors import InvalidRegistration

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SHAPE = "expected host:port, e.g. 10.0.0.5:50051, replica-3.internal:50051 or [::1]:50051"
ALLOW_SETTING = "router.allowed_endpoint_networks"
#: Refused by default: (network, why).
REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "an unspecified address"),
        ("::/128", "an unspecified address"),
        ("169.254.0.0/16", "a link-local address (cloud metadata services live there)"),
        ("fe80::/10", "a link-local address"),
        ("fd00:ec2::254/128", "a cloud metadata address"),
        ("100.100.100.200/32", "a cloud metadata address"),
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
    )
)
#: Names of metadata services that resolve into refused networks.
REFUSED_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
MAX_HOST = 253


def shown(value: object, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class AddressPolicy:
    """Networks let in although refused by default (``router.allowed_endpoint_networks``)."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[str]) -> AddressPolicy:
        """From the setting's strings; a bad one is a :class:`ConfigError` naming it and the accepted form."""
        allowed = []
        for text in networks:
            try:
                allowed.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise ConfigError(
                    f"{ALLOW_SETTING}: {text!r} is not a network ({exc}); expected e.g. 169.254.10.0/24 or fe80::/64"
                ) from None
        return cls(tuple(allowed))

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be registered, or ``None`` when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allowed if net.version == address.version):
            return None
        for net, why in REFUSED:
            if net.version == address.version and address in net:
                return why
        return None


DEFAULT_POLICY = AddressPolicy()


def _ip(host: str) -> Address | None:
    """``host`` as an IP address when it is one, in any form a resolver would read as one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # 127.1, 0x7f000001, 2130706433, 017.0.0.1: what inet_aton takes, gRPC may too
    except OSError:
        return None
    raise InvalidRegistration(f"host {shown(host)} is an IPv4 address in a non-standard form; write it a.b.c.d")


def _check_hostname(host: str, endpoint: str) -> None:
    name = host.removesuffix(".").lower()
    labels = name.split(".")
    if len(host) > MAX_HOST or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidRegistration(
            f"endpoint {shown(endpoint)} has an invalid host: a hostname is dot-separated labels of letters, "
            f"digits, '-' and '_' (at most {MAX_HOST} characters), an IPv4 address a.b.c.d, or an IPv6 one in "
            f"brackets; {SHAPE}"
        )
    if labels[-1].isdigit():
        raise InvalidRegistration(f"endpoint {shown(endpoint)}: {host!r} is neither an IPv4 address nor a hostname")
    if name in REFUSED_NAMES:
        raise InvalidRegistration(
            f"endpoint {shown(endpoint)} names a cloud metadata service, which the router never connects to"
        )


def check_endpoint(endpoint: object, policy: AddressPolicy = DEFAULT_POLICY) -> str:
    """``host:port`` as gRPC dials it; IPv6 hosts in brackets (``[::1]:50051``); refused addresses refused."""
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidRegistration(f"endpoint must be a string host:port, got {shown(endpoint)}")
    if len(endpoint) > MAX_HOST + 8:
        raise InvalidRegistration(f"endpoint {shown(endpoint)} is longer than any host:port; {SHAPE}")
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host:
        raise InvalidRegistration(f"endpoint {shown(endpoint)} has no host:port; {SHAPE}")
    if "://" in endpoint or "/" in host or not endpoint.isprintable() or any(ch.isspace() for ch in endpoint):
        raise InvalidRegistration(f"endpoint {shown(endpoint)} is not a bare host:port (no scheme or path); {SHAPE}")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise InvalidRegistration(f"endpoint {shown(endpoint)} has an invalid port {port!r} (1-65535); {SHAPE}")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if bracketed:
        try:
            address: Address | None = ipaddress.IPv6Address(bare)
        except ValueError:
            raise InvalidRegistration(f"endpoint {shown(endpoint)} has an invalid IPv6 address; {SHAPE}") from None
    elif ":" in host or "[" in host or "]" in host:
        raise InvalidRegistration(f"endpoint {shown(endpoint)} has an invalid host (IPv6 goes in brackets); {SHAPE}")
    else:
        address = _ip(bare)
        if address is None:
            _check_hostname(bare, endpoint)
    if address is not None and (why := policy.refusal(address)) is not None:
        raise InvalidRegistration(
            f"endpoint {shown(endpoint)} is {why}, which the router does not connect to; "
            f"{ALLOW_SETTING} lets such networks in"
        )
    return endpoint


def check_engine_url(url: object, policy: AddressPolicy = DEFAULT_POLICY) -> str:
    """An OpenAI-compatible engine's base URL: ``http(s)://host:port`` with no path (``/v1`` is added per call)."""
    shape = "expected http://host:port, e.g. http://127.0.0.1:8000"
    if not isinstance(url, str) or not url:
        raise InvalidRegistration(f"engine URL must be a string, got {shown(url)}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise InvalidRegistration(f"engine URL {shown(url)} must start with http:// or https://; {shape}")
    rest = rest.rstrip("/").removesuffix("/v1")
    if "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        raise InvalidRegistration(f"engine URL {shown(url)} must not have a path or user (other than /v1); {shape}")
    check_endpoint(rest, policy)
    return f"{scheme}://{rest}"


def check_link(link: object, policy: AddressPolicy = DEFAULT_POLICY) -> str | None:
    """``<transport>://host:port``, the replica's router link; ``None`` when it serves none."""
    if link is None:
        return None
    shape = "expected <transport>://host:port, e.g. tcp://10.0.0.5:50052"
    if not isinstance(link, str):
        raise InvalidRegistration(f"link must be a string, got {type(link).__name__}; {shape}")
    scheme, sep, address = link.partition("://")
    if not sep or not scheme.isidentifier() or not scheme.isascii() or len(scheme) > 32:
        raise InvalidRegistration(f"link {shown(link)} names no transport; {shape}")
    try:
        check_endpoint(address, policy)
    except InvalidRegistration as exc:
        raise InvalidRegistration(f"link {shown(link)}: {exc.message}") from None
    return link
