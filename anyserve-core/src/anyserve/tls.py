"""TLS for every hop, from ``[tls]`` (see docs/security.md): contexts and gRPC credentials built once.

One setting for the whole cluster: with ``cert_file`` configured a process
serves TLS (the router's HTTP and gRPC fronts, a replica's gRPC port and
router link) and connects to the others over TLS, verifying them against
``ca_file`` (or the system's trust store). Without it nothing changes:
plain TCP on loopback, as before.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from anyserve.config import TlsSettings
from anyserve.errors import ConfigError


def _read(path: str | None, what: str) -> bytes:
    if not path:
        raise ConfigError(f"[tls] {what} is required when [tls] cert_file is set")
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"[tls] {what} {path}: {exc.strerror}") from None


def check(tls: TlsSettings) -> None:
    """Fail at start-up, naming the setting, rather than at the first connection."""
    if tls.enabled:
        server_context(tls)
        client_context(tls)


def server_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """What a listening socket serves with; None when TLS is off."""
    if not tls.enabled:
        return None
    _read(tls.key_file, "key_file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(Path(tls.cert_file or "").expanduser()), str(Path(tls.key_file or "").expanduser()))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] cert_file/key_file cannot be loaded: {exc}") from None
    return context


def client_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """What a connecting socket verifies the other side with; None when TLS is off."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=str(Path(tls.ca_file).expanduser()))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[tls] ca_file {tls.ca_file} cannot be loaded: {exc}") from None
    return context


def grpc_server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    if not tls.enabled:
        return None
    return grpc.ssl_server_credentials([(_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))])


def grpc_channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    if not tls.enabled:
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read(tls.ca_file, "ca_file") if tls.ca_file else None)


def add_port(server: grpc.Server | grpc.aio.Server, address: str, tls: TlsSettings) -> int:
    """Bind ``address`` on ``server``, with TLS when configured; the bound port (0: failed)."""
    credentials = grpc_server_credentials(tls)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
