"""Talking to the router over its HTTP API (see docs/protocol.md).

Replicas use the async client to register, heartbeat and forward delegated
requests; handlers (``context.call``) and discovery clients use the sync one.
Requests travel as protobuf ``ModelInferRequest`` bytes
(``application/x-protobuf``) so nothing is converted to JSON on the way; the
router's error answers become the same :mod:`anyserve.errors` classes a
replica raises, through the shared gRPC <-> HTTP status table.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from anyserve import tracing
from anyserve.capability import normalize_key, normalize_value
from anyserve.credentials import bearer
from anyserve.errors import AnyServeError, Unavailable, code_for_http, error_for_code
from anyserve.protocol.names import CAPABILITY_HEADER, PROTOBUF, REPLICA_KEY_HEADER


def capability_headers(query: Mapping[str, Any]) -> dict[str, str]:
    return {CAPABILITY_HEADER + normalize_key(k): normalize_value(v) for k, v in query.items()}


def _error(response: httpx.Response, url: str) -> AnyServeError:
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text or response.reason_phrase
    return error_for_code(code_for_http(response.status_code), f"router {url}: {message}")


def _unreachable(url: str, exc: httpx.HTTPError) -> Unavailable:
    return Unavailable(f"router {url} is unreachable: {type(exc).__name__}: {exc}")


class RouterClient:
    """Synchronous; one pooled HTTP connection set per instance."""

    def __init__(self, url: str, *, timeout: float | None = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def infer(
        self,
        query: Mapping[str, Any],
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """POST /infer with a serialised ModelInferRequest; the serialised response."""
        sent = {"Content-Type": PROTOBUF, "Accept": PROTOBUF, **capability_headers(query), **(headers or {})}
        if tracing.tracer is not None:  # a delegated or handler's call continues the request's trace
            sent = tracing.headers_with_current(sent)
        try:
            kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            response = self._http.post("/infer", content=payload, headers=sent, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        if response.status_code >= 400:
            raise _error(response, self.url)
        return response.content

    def lookup(self, query: Mapping[str, Any]) -> tuple[str, str]:
        """GET /lookup: ``(replica_id, endpoint)`` of a replica serving ``query``."""
        try:
            response = self._http.get(
                "/lookup", params={normalize_key(k): normalize_value(v) for k, v in query.items()}
            )
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        if response.status_code >= 400:
            raise _error(response, self.url)
        body = response.json()
        return body["replica_id"], body["endpoint"]

    def close(self) -> None:
        self._http.close()


class AsyncRouterClient:
    """Asynchronous; used inside a replica's event loop.

    ``token`` (the cluster token) goes with every request as ``Authorization:
    Bearer``; ``replica_key`` is this replica's own secret, made once per
    process, which binds its id at the router (see docs/security.md).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: httpx.Timeout | float | None = 60.0,
        token: str | None = None,
        replica_key: str | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.replica_key = replica_key or secrets.token_urlsafe(32)
        headers = {**bearer(token), REPLICA_KEY_HEADER: self.replica_key}
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers, verify=verify or True)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None

    async def register(
        self,
        replica_id: str,
        endpoint: str,
        capabilities: list[dict[str, Any]],
        *,
        status: dict[str, Any] | None = None,
        link: str | None = None,
    ) -> dict[str, Any]:
        """``link`` (``<transport>://host:port``) is where the router may send requests instead of ``endpoint``."""
        body: dict[str, Any] = {"replica_id": replica_id, "endpoint": endpoint, "capabilities": capabilities}
        if status is not None:
            body["status"] = status
        if link is not None:
            body["link"] = link
        response = await self._send("POST", "/register", json=body)
        if response.status_code >= 400:
            raise _error(response, self.url)
        return response.json()

    async def heartbeat(self, replica_id: str, in_flight: int, signals: dict[str, Any] | None = None) -> bool:
        """False when the router does not know this replica (it restarted): re-register.

        ``signals`` is the replica's load report (docs/routing.md, "Load signals").
        """
        body: dict[str, Any] = {"replica_id": replica_id, "in_flight": in_flight}
        if signals is not None:
            body["signals"] = signals
        response = await self._send("POST", "/heartbeat", json=body)
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise _error(response, self.url)
        return True

    async def deregister(self, replica_id: str) -> None:
        response = await self._send("DELETE", f"/register/{replica_id}")
        if response.status_code >= 400 and response.status_code != 404:
            raise _error(response, self.url)

    async def infer(
        self, query: Mapping[str, Any], payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> bytes:
        sent = {"Content-Type": PROTOBUF, "Accept": PROTOBUF, **capability_headers(query), **(headers or {})}
        if tracing.tracer is not None:  # a delegated or handler's call continues the request's trace
            sent = tracing.headers_with_current(sent)
        response = await self._send("POST", "/infer", content=payload, headers=sent)
        if response.status_code >= 400:
            raise _error(response, self.url)
        return response.content

    async def aclose(self) -> None:
        await self._http.aclose()
