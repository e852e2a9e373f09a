"""Configuration: file, then ``ANYSERVE_*`` environment, then CLI flags.

A file is ``anyserve.toml`` (top level) or a ``pyproject.toml`` with a
``[tool.anyserve]`` table. Each plugin category is a table holding the
selected ``name`` and an ``options`` table passed to that plugin's factory::

    [transport]
    name = "unix"

    [objects]
    url = "file:///var/lib/anyserve/objects"

    [encoding]
    name = "sse"

    [link]
    name = "tcp"            # router -> replica frames; "off" for gRPC

    [router]
    url = "http://127.0.0.1:8080"

Core resolves names; plugins never read configuration themselves.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from anyserve.errors import ConfigError
from anyserve.settings import (
    AuthSettings,
    ClusterSettings,
    EngineSettings,
    ObjectsSettings,
    OpenAISettings,
    ReplicaSettings,
    RouterSettings,
    RoutingSettings,
    Selection,
    Settings,
    TlsSettings,
    TracingSettings,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_KEYS",
    "FILE_NAMES",
    "AuthSettings",
    "ClusterSettings",
    "EngineSettings",
    "ObjectsSettings",
    "OpenAISettings",
    "ReplicaSettings",
    "RouterSettings",
    "RoutingSettings",
    "Selection",
    "Settings",
    "TlsSettings",
    "TracingSettings",
    "find_config_file",
    "load_settings",
]

CONFIG_ENV = "ANYSERVE_CONFIG"
FILE_NAMES = ("anyserve.toml", "pyproject.toml")

#: Environment variable -> dotted setting it overrides.
ENV_KEYS: dict[str, str] = {
    "ANYSERVE_TRANSPORT": "transport.name",
    "ANYSERVE_OBJECT_STORE": "objects.url",
    "ANYSERVE_OBJECT_TTL": "objects.ttl_seconds",
    "ANYSERVE_OBJECT_GC_INTERVAL": "objects.gc_interval_seconds",
    "ANYSERVE_STREAM_ENCODING": "encoding.name",
    "ANYSERVE_MATCHER": "matcher.name",
    "ANYSERVE_LINK": "link.name",
    "ANYSERVE_ROUTER_URL": "router.url",
    "ANYSERVE_ACCESS_LOG": "router.access_log",
    "ANYSERVE_ROUTER_METRICS": "router.metrics",
    "ANYSERVE_MAX_MESSAGE_BYTES": "replica.max_message_bytes",
    "ANYSERVE_METRICS_PORT": "replica.metrics_port",
    "ANYSERVE_MAX_TENSOR_ELEMENTS": "replica.max_tensor_elements",
    "ANYSERVE_CLUSTER_TOKEN": "cluster.token",
    "ANYSERVE_CLUSTER_TOKEN_FILE": "cluster.token_file",
    "ANYSERVE_ADMIN_TOKEN": "cluster.admin_token",
    "ANYSERVE_ADMIN_TOKEN_FILE": "cluster.admin_token_file",
    "ANYSERVE_STATE_DIR": "cluster.state_dir",
    "ANYSERVE_CLUSTER_AUTH": "cluster.auth",
    "ANYSERVE_API_KEYS": "auth.api_keys",
    "ANYSERVE_API_KEYS_FILE": "auth.api_keys_file",
    "ANYSERVE_TLS_CERT_FILE": "tls.cert_file",
    "ANYSERVE_TLS_KEY_FILE": "tls.key_file",
    "ANYSERVE_TLS_CA_FILE": "tls.ca_file",
    "ANYSERVE_TRACING": "tracing.enabled",
    "ANYSERVE_TRACING_EXPORTER": "tracing.exporter",
    "ANYSERVE_TRACING_ENDPOINT": "tracing.endpoint",
    "ANYSERVE_TRACING_FILE": "tracing.file",
    "ANYSERVE_TRACING_SAMPLE_RATIO": "tracing.sample_ratio",
    "ANYSERVE_ROUTING_FILTERS": "routing.filters",
    "ANYSERVE_ROUTING_SCORERS": "routing.scorers",
    "ANYSERVE_ROUTING_PICKER": "routing.picker",
    "ANYSERVE_ROUTING_SAMPLE": "routing.sample",
}


def find_config_file(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """``$ANYSERVE_CONFIG``, else ``anyserve.toml``, else a pyproject with ``[tool.anyserve]``."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    base = cwd or Path.cwd()
    if (base / "anyserve.toml").is_file():
        return base / "anyserve.toml"
    pyproject = base / "pyproject.toml"
    if pyproject.is_file() and "anyserve" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "options":
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _explain(exc: ValidationError, where: str) -> ConfigError:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"[{key}]: unknown setting")
        else:
            problems.append(f"[{key}]: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(f"{where}: " + "; ".join(problems))


def load_settings(
    config_file: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build the effective settings; raise :class:`ConfigError` naming file and key.

    ``overrides`` maps dotted keys (``"transport.name"``) to CLI flag values;
    ``None`` values mean "flag not given".
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = Path(config_file) if config_file else find_config_file(cwd, env)
    if path is not None:
        data = _read_toml(path)
        if path.name == "pyproject.toml":
            data = data.get("tool", {}).get("anyserve", {})
        try:
            Settings.model_validate(data)
        except ValidationError as exc:
            raise _explain(exc, str(path)) from None
        merged = data
        sources.update({k: str(path) for k in _flatten(data)})

    for var, dotted in ENV_KEYS.items():
        if env.get(var):
            _set_dotted(merged, dotted, env[var])
            sources[dotted] = f"${var}"

    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(merged, dotted, value)
            sources[dotted] = "command line"

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise _explain(exc, "environment/command line") from None
    settings.sources = sources
    return settings
