"""Existing OpenAI-compatible engine servers (vLLM, SGLang, TGI, Ollama, llama.cpp) as providers of capabilities.

An engine is added by URL (``[[router.engines]]`` in the configuration,
``POST /engines``, or ``anyserve engine add``). The router probes it
(``GET /health``, else ``GET /v1/models``), discovers its models from
``/v1/models``, and keeps it in the registry as an entry of protocol
``openai`` offering ``{type: chat, model: <id>}`` and ``{type: completion,
model: <id>}`` for each model (or the capabilities it was added with), for
as long as it answers. Only the OpenAI front routes to engines; requests
and streams pass through unchanged (the ``model`` field is rewritten only
when the client used an alias), the router's leases count an engine's
requests in flight as they do a replica's, and a client that leaves closes
the upstream connection, which is how engine servers notice cancellation.
Each engine's load (requests running and waiting, slots, KV cache use) is
read about once a second into its entry's signals (:mod:`anyserve_router.engine_signals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from anyserve_router.engine_signals import EnginePoller
from anyserve_router.errors import InvalidRegistration, UnknownReplica
from anyserve_router.offers import check_capabilities, check_engine_url, check_replica_id
from anyserve_router.registry import OPENAI, ReplicaRegistry
from anyserve_router.upstream import Target, UpstreamError

log = logging.getLogger("anyserve.router.engines")

#: Capability types offered for each model an engine lists, unless it was added with its own capabilities.
DEFAULT_TYPES = ("chat", "completion")
#: Seconds to connect to an engine (a refused or silent one counts as unreachable) and to answer a probe.
CONNECT_TIMEOUT = 1.0
PROBE_TIMEOUT = 5.0
#: Seconds between two readings of an engine's model list (only while no request of this router is on it).
MODELS_EVERY = 30.0
#: An id made from an engine's URL keeps at most this much of it (ids are at most 128 characters).
MAX_DERIVED_ID = 100
#: Headers not passed on to the engine or back to the client (hop-by-hop, or recomputed).
_SKIP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "accept-encoding"}
)


@dataclass(frozen=True)
class EngineSpec:
    """One engine server to front: its base URL, registry id and, optionally, fixed capabilities."""

    url: str
    id: str
    #: Capabilities to offer; empty: one per capability type and model the engine lists.
    capabilities: tuple[Mapping[str, Any], ...] = ()
    #: Capability types offered for each listed model when ``capabilities`` is empty.
    types: tuple[str, ...] = DEFAULT_TYPES

    @classmethod
    def of(cls, url: Any, id: Any = None, capabilities: Any = None, types: Any = None) -> EngineSpec:
        """Checked: a bad URL, id or capability is :class:`InvalidRegistration` naming the field."""
        url = check_engine_url(url)
        derived = "engine-" + re.sub(r"[^A-Za-z0-9]+", "-", url.split("://")[1])[:MAX_DERIVED_ID]
        engine_id = check_replica_id(id) if id else derived
        check_capabilities(list(capabilities) if isinstance(capabilities, tuple) else capabilities or [])
        caps = tuple(dict(c) for c in capabilities or ())
        if types is not None and not isinstance(types, (list, tuple)):
            raise InvalidRegistration(f"types must be a list of capability types, got {type(types).__name__}")
        kinds = tuple(types or DEFAULT_TYPES)
        if not kinds or not all(isinstance(t, str) and t for t in kinds):
            raise InvalidRegistration(f"types must be a non-empty list of capability types, got {types!r}")
        return cls(url, engine_id, caps, kinds)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "capabilities": [dict(c) for c in self.capabilities]}


@dataclass
class EngineState:
    """What the router last learned about an engine."""

    spec: EngineSpec
    healthy: bool = False
    models: list[str] = field(default_factory=list)
    error: str | None = None
    task: asyncio.Task[None] | None = None
    #: Reads the engine's load (``/slots``, ``/metrics``) into its entry's signals; see engine_signals.py.
    poller: asyncio.Task[None] | None = None
    #: Whether the engine serves ``GET /health`` (llama-cpp-python's server does not).
    has_health: bool = True
    #: When the model list was last read (monotonic seconds); 0: never.
    listed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "healthy": self.healthy, "models": self.models, "error": self.error}


class Engines:
    """The engines this router fronts: probed every ``ttl/3``, registered while they answer."""

    def __init__(self, registry: ReplicaRegistry, client: httpx.AsyncClient | None = None) -> None:
        self.registry = registry
        self.interval = registry.ttl_seconds / 3
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(PROBE_TIMEOUT, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self.engines: dict[str, EngineState] = {}
        #: The key the engines' registry entries are bound to: no replica can register over an engine's id.
        self._key = secrets.token_urlsafe(32)

    # -- membership ------------------------------------------------------------------------

    async def add(self, spec: EngineSpec) -> EngineState:
        """Front ``spec``: probed now (the answer says whether it is up), then every ``ttl/3``."""
        existing = self.engines.get(spec.id)
        if existing is not None and existing.spec.url != spec.url:
            raise InvalidRegistration(f"engine id {spec.id!r} already fronts {existing.spec.url}; remove it first")
        if existing is not None:
            _stop(existing)
        state = EngineState(spec)
        self.engines[spec.id] = state
        await self._probe(state)
        loop = asyncio.get_running_loop()
        state.task = loop.create_task(self._watch(state), name=f"anyserve-engine-{spec.id}")
        poller = EnginePoller(spec.id, spec.url, self.client, lambda signals: self._keep_signals(spec.id, signals))
        # A context of its own: it outlives the request that added the engine, whose id its log lines must not carry.
        state.poller = loop.create_task(
            poller.run(), name=f"anyserve-engine-signals-{spec.id}", context=contextvars.Context()
        )
        return state

    def _keep_signals(self, engine_id: str, signals: dict[str, Any]) -> None:
        """The poller's reading, as the engine entry's signals (none while the engine is not registered)."""
        with contextlib.suppress(UnknownReplica):
            self.registry.report(engine_id, signals, key=self._key)

    async def remove(self, engine_id: str) -> None:
        state = self.engines.pop(engine_id, None)
        if state is None:
            raise UnknownReplica(f"no engine {engine_id!r}; GET /engines lists them")
        _stop(state)
        with contextlib.suppress(UnknownReplica):
            self.registry.deregister(engine_id, self._key)

    def list(self) -> list[dict[str, Any]]:
        return [state.to_dict() for state in self.engines.values()]

    async def close(self) -> None:
        for state in self.engines.values():
            _stop(state)
        await self.client.aclose()

    # -- probing ----------------------------------------------------------------------------

    async def _watch(self, state: EngineState) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._probe(state)
            except Exception:  # the watch must outlive any one failure
                log.exception("probing engine %s failed", state.spec.id)

    async def _probe(self, state: EngineState) -> None:
        """One probe: keep the entry alive (a heartbeat), register it anew when its models changed.

        An engine that refuses connections is gone and leaves routing at
        once; one that is slow to answer (busy generating) or answers badly
        keeps its entry until the registry's TTL expires it, so a busy engine
        is never dropped for being busy.
        """
        spec = state.spec
        try:
            models = await self._check(state)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            if state.healthy or state.error is None:
                log.warning("engine %s at %s does not answer: %s", spec.id, spec.url, exc)
            state.healthy, state.error = False, f"{type(exc).__name__}: {exc}"
            if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError)):
                with contextlib.suppress(UnknownReplica):
                    self.registry.deregister(spec.id, self._key)
            return
        if not state.healthy:
            log.warning("engine %s at %s is up, serving %s", spec.id, spec.url, ", ".join(models) or "no model")
        known = state.healthy and models == state.models
        state.healthy, state.error, state.models = True, None, models
        if known:
            try:
                self.registry.heartbeat(spec.id, key=self._key)
                return
            except UnknownReplica:  # expired meanwhile: register again
                pass
        self.registry.register(spec.id, spec.url, self._capabilities(spec, models), protocol=OPENAI, key=self._key)

    async def _check(self, state: EngineState) -> list[str]:
        """The engine's models, read again only every :data:`MODELS_EVERY` seconds and only while it is idle.

        Between two readings the probe is ``GET /health``, or a bare TCP
        connection to an engine without one: llama-cpp-python's server
        interrupts the generation in progress whenever another request asks
        for its model, ``/v1/models`` included, so listing it while it
        serves a stream would cut the stream short.
        """
        url = state.spec.url
        if state.has_health:
            health = await self.client.get(f"{url}/health")
            if health.status_code == 404:
                state.has_health = False
            else:
                health.raise_for_status()
        listed_long_ago = time.monotonic() - state.listed_at >= MODELS_EVERY
        if not state.listed_at or not state.healthy or (listed_long_ago and self._idle(state.spec.id)):
            state.listed_at = time.monotonic()
            return await self._models(url)
        if not state.has_health:
            host, _, port = url.split("://", 1)[1].rpartition(":")
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), CONNECT_TIMEOUT)
            writer.close()
        return state.models

    def _idle(self, engine_id: str) -> bool:
        try:
            return self.registry.get(engine_id).in_flight == 0
        except UnknownReplica:
            return True

    async def _models(self, url: str) -> list[str]:
        listed = await self.client.get(f"{url}/v1/models")
        listed.raise_for_status()
        data = listed.json().get("data")
        if not isinstance(data, list):
            raise ValueError("GET /v1/models did not answer a list of models")
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]

    def _capabilities(self, spec: EngineSpec, models: Sequence[str]) -> list[dict[str, Any]]:
        """Each model as each type, unary and streaming: within ``router.max_capabilities``, the first models kept."""
        per_model = 2 * len(spec.types)
        room = max(1, self.registry.limits.max_capabilities // per_model)
        if not spec.capabilities and len(models) > room:
            log.warning(
                "engine %s lists %d models; offering the first %d (router.max_capabilities = %d)",
                spec.id, len(models), room, self.registry.limits.max_capabilities,
            )  # fmt: skip
            models = models[:room]
        base = [dict(c) for c in spec.capabilities] or [{"type": t, "model": m} for m in models for t in spec.types]
        return base + [{**c, "stream": True} for c in base]

    # -- the data path -------------------------------------------------------------------------

    def _request(self, target: Target, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Request:
        # identity: the body is passed on as the bytes that arrive, so it must not be compressed.
        sent = {**{k: v for k, v in headers.items() if k.lower() not in _SKIP_HEADERS}, "accept-encoding": "identity"}
        return self.client.build_request(
            "POST", f"{target.endpoint}{path}", content=body, headers=sent, timeout=httpx.Timeout(None, connect=1.0)
        )

    async def send(self, target: Target, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """The engine's answer to ``POST path``, its body not read yet (the caller streams or reads it).

        An engine that cannot be reached is ``unreachable`` (routing tries
        another); one that breaks mid-way fails the request.
        """
        try:
            return await self.client.send(self._request(target, path, body, headers), stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UpstreamError(f"cannot connect: {exc}", code="UNAVAILABLE", unreachable=True) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}", code="UNAVAILABLE") from None


def _stop(state: EngineState) -> None:
    """Stop probing an engine and reading its load."""
    for task in (state.task, state.poller):
        if task is not None:
            task.cancel()


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """A whole (unary) answer of an engine, refusing more than ``limit`` bytes: a broken or hostile
    engine must not fill the router's memory. Over the limit the connection is closed and ``ValueError`` raised."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise ValueError(f"the engine's answer is larger than {limit} bytes (router.max_body_bytes)")
            chunks.append(chunk)
    finally:
        await response.aclose()
    return b"".join(chunks)


#: The last event of an OpenAI stream. Once the engine has sent it, its slot is free.
STREAM_END = b"data: [DONE]"


async def relay(response: httpx.Response, on_end: Callable[[], None]) -> AsyncIterator[bytes]:
    """An engine's body as it arrives; closing it (the client left) closes the upstream connection.

    ``on_end`` runs once, as soon as the engine's ``[DONE]`` arrives and before
    it is passed on, or else when the body ends: a client that sends its next
    request the moment it reads ``[DONE]`` must find the engine counted free,
    or least-loaded routing sees a finished stream as load and may queue the
    request behind a full engine.
    """
    tail = b""
    try:
        async for chunk in response.aiter_raw():
            if tail is not None:
                seen = tail + chunk
                if STREAM_END in seen:
                    on_end()
                    tail = None
                else:
                    tail = seen[-len(STREAM_END) :]
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("an engine's stream broke: %s", exc)
    finally:
        if tail is not None:
            on_end()
        await response.aclose()


def passed_headers(response: httpx.Response) -> dict[str, str]:
    """The engine's response headers worth passing on (content type, not hop-by-hop ones)."""
    return {k: v for k, v in response.headers.items() if k.lower() not in _SKIP_HEADERS | {"content-encoding"}}
