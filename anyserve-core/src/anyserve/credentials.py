"""The cluster's shared secrets: the cluster token (who may join) and the admin token (who may manage).

Both come from configuration (``[cluster]``), the environment, or a file. So
that ``anyserve router`` and ``anyserve start`` need no flags on one machine,
with none configured they are made in the state directory (0700, the files
0600) by whichever process needs them first, and the router, its replicas,
the CLI and ``anyserve demo`` started by the same user all read them there.

Tokens travel as ``Authorization: Bearer <token>`` (HTTP and gRPC metadata)
and in the router link's client hello; they are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from anyserve.config import Settings
from anyserve.errors import ConfigError

CLUSTER_TOKEN_FILE = "cluster.token"
ADMIN_TOKEN_FILE = "admin.token"
#: The HTTP header and gRPC metadata key credentials travel in.
AUTHORIZATION = "authorization"
_BEARER = "bearer "


def state_dir(settings: Settings) -> Path:
    """``[cluster] state_dir``, else ``$XDG_STATE_HOME/anyserve``, else ``~/.local/state/anyserve``."""
    if settings.cluster.state_dir:
        return Path(settings.cluster.state_dir).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "anyserve"


def _private_dir(path: Path) -> None:
    """Create ``path`` 0700; refuse one that others can write or that belongs to someone else."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to another user (uid {info.st_uid}); set [cluster] state_dir")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path} is writable by others (mode {oct(info.st_mode & 0o777)}): chmod 700 it")


def read_token(path: Path) -> str:
    """A token file's one line; one that others may read is refused, as ssh refuses such a key."""
    try:
        info = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the token file {path} is readable by others (mode {oct(info.st_mode & 0o777)}): chmod 600")
    if not text:
        raise ConfigError(f"the token file {path} is empty")
    return text


def ensure_token(path: Path) -> str:
    """The token in ``path``, made (random, 0600) when there is none; safe when two routers start at once."""
    _private_dir(path.parent)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _configured(value: str | None, file: str | None) -> str | None:
    if value:
        return value
    if file:
        return read_token(Path(file).expanduser())
    return None


@dataclass(frozen=True)
class Credentials:
    """The tokens one process uses; ``cluster`` None means the control plane is open (``auth = "off"``)."""

    cluster: str | None
    admin: str | None

    @classmethod
    def load(cls, settings: Settings) -> Credentials:
        """Configured tokens, else the state directory's, made there by whichever process needs them first.

        So a router, its replicas and the CLI started by one user on one
        machine agree on the tokens with no flags; anything elsewhere is
        given the token (``[cluster] token_file``, ``$ANYSERVE_CLUSTER_TOKEN``).
        """
        if settings.cluster.auth == "off":
            return cls(None, None)
        c = settings.cluster
        folder = state_dir(settings)
        cluster = _configured(c.token, c.token_file) or ensure_token(folder / CLUSTER_TOKEN_FILE)
        admin = _configured(c.admin_token, c.admin_token_file) or ensure_token(folder / ADMIN_TOKEN_FILE)
        return cls(cluster, admin)

    def is_cluster(self, given: str | None) -> bool:
        """``given`` is the cluster token (or the admin token, which grants everything the cluster token does)."""
        if self.cluster is None:
            return True
        return given is not None and (same(given, self.cluster) or self.is_admin(given))

    def is_admin(self, given: str | None) -> bool:
        if self.cluster is None:
            return True
        return given is not None and self.admin is not None and same(given, self.admin)


def same(given: str, expected: str) -> bool:
    """Constant-time comparison: how long it takes says nothing about how much of ``given`` was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(token: str | None) -> dict[str, str]:
    """The header carrying ``token``; none for no token."""
    return {AUTHORIZATION: f"Bearer {token}"} if token else {}


def link_hello(token: str | None) -> dict[str, str]:
    """What the router says when it opens a replica's link (the replica admits cluster members only)."""
    return {"token": token} if token else {}


def from_bearer(value: str | None) -> str | None:
    """The token in an ``Authorization: Bearer`` value, or None."""
    if value and value[: len(_BEARER)].lower() == _BEARER:
        return value[len(_BEARER) :].strip() or None
    return None
