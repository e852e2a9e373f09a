"""Helpers for the router end-to-end tests: register real replicas by hand, read SSE.

Replicas here are registered by POSTing ``/register`` with their endpoint and
the capabilities their app serves (written out below), so these tests pin
the router on its own, independently of replica-side registration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import httpx

from anyserve.config import load_settings
from anyserve.credentials import Credentials, bearer
from anyserve.protocol import names

#: What tests/apps/echo_app.py serves, as a replica would register it.
ECHO_APP = [
    {"type": "echo"},
    {"type": "echo", "variant": "async"},
    {"type": "chat", "model": "tiny", "region": "eu"},
    {"type": "add"},
    {"type": "boom"},
    {"type": "slow"},
    {"type": "chat", "stream": True},
    {"type": "ticker", "stream": True},
    {"type": "broken-stream", "stream": True},
]
CHAT_APP = [{"type": "chat", "model": "big", "gpus": 2}, {"type": "countdown", "stream": True}]
EMBED_APP = [{"type": "embed", "model_family": "mini"}]


def member_headers() -> dict[str, str]:
    """What a cluster member sends: the cluster token (the session's state directory has it) and a replica key.

    Tests that register replicas by hand are members; tests about refusing
    strangers override these headers.
    """
    return {**bearer(Credentials.load(load_settings()).cluster), names.REPLICA_KEY_HEADER: "tests-replica-key"}


def admin_headers() -> dict[str, str]:
    """The admin token (engines, deregistering others)."""
    return bearer(Credentials.load(load_settings()).admin)


def register(
    http: httpx.Client, replica_id: str, endpoint: str, capabilities: list[dict[str, Any]], link: str | None = None
) -> dict:
    """Register by hand; with ``link`` the router sends requests over it instead of gRPC."""
    body = {"replica_id": replica_id, "endpoint": endpoint, "capabilities": capabilities}
    if link is not None:
        body["link"] = link
    response = http.post("/register", json=body, headers=member_headers())
    assert response.status_code == 200, response.text
    return response.json()


def tensor(name: str, datatype: str, data: list, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data, **extra}


def output(body: dict[str, Any], name: str) -> list:
    for out in body["outputs"]:
        if out["name"] == name:
            return out["data"]
    raise KeyError(f"{name} not in {[o['name'] for o in body['outputs']]}")


def sse_events(lines: Iterable[str]) -> Iterable[tuple[str, Any]]:
    """(event name, decoded data) per Server-Sent Event, as lines arrive."""
    name, data = "message", None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            raw = line[len("data: ") :]
            data = raw if raw == "[DONE]" else json.loads(raw)
        elif line == "" and data is not None:
            yield name, data
            name, data = "message", None


def token_text(data: dict[str, Any]) -> str:
    return output(data, "text_output")[0]


def wait_registered(router_url: str, count: int, timeout: float = 30) -> list[dict]:
    """The registry once ``count`` replicas registered themselves (they do so just after "ready")."""
    deadline = time.monotonic() + timeout
    while True:
        replicas = httpx.get(f"{router_url}/registry", timeout=5).json()["replicas"]
        if len(replicas) >= count:
            return replicas
        assert time.monotonic() < deadline, f"only {len(replicas)} of {count} replicas registered"
        time.sleep(0.1)
