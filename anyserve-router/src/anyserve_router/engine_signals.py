"""Load signals of the engine servers the router fronts, read from the engines' own endpoints.

An engine server sends no heartbeat, so the router asks it, about once a
second: llama.cpp's ``llama-server`` answers ``GET /slots`` (each slot,
busy or not) and ``GET /metrics`` (Prometheus text:
``llamacpp:requests_processing``, ``llamacpp:requests_deferred``,
``llamacpp:kv_cache_usage_ratio`` where its version has it); vLLM answers
``GET /metrics`` (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:gpu_cache_usage_perc`` or ``vllm:kv_cache_usage_perc``). What it
learns becomes the engine entry's signals: ``running``, ``queued``,
``cache_use`` and ``slots`` (docs/routing.md, "Load signals"). A
llama-server started with ``LLAMA_SERVER_SLOTS_DEBUG=1`` also lists what
each slot holds (the prompt it last read and what it generated): that
becomes the ``prompts`` signal, an :class:`~anyserve.routing.held.EngineCache`
the ``prefix`` scorer reads to know what the engine caches rather than guess.

llama-server serves ``/metrics`` only when started with ``--metrics``
(``/slots`` is on unless ``--no-slots``); an endpoint the engine does not
serve (404, 405, 501) is not asked again, and an engine serving neither is
not asked at all any more. Every answer is bounded in size and time, and
a failed reading is logged at debug level and tried again a second later:
the engine's own probe (:mod:`anyserve_router.engines`) decides whether it
is up, this only reads how busy it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from anyserve.routing.held import SIGNAL, EngineCache

log = logging.getLogger("anyserve.router.engines")

#: Seconds between two readings of one engine.
POLL_SECONDS = 1.0
#: Seconds one reading may take, connecting included.
READ_TIMEOUT = 1.0
#: Largest answer read, per endpoint: a vLLM ``/metrics`` with many models is a few hundred KiB; a
#: llama-server ``/slots`` listing its slots' prompts is about 4 bytes a cached token (16 slots of 32k: 2 MiB).
MAX_BYTES = {"/slots": 4 * 1024 * 1024, "/metrics": 4 * 1024 * 1024}
#: Answers meaning "this engine does not serve that endpoint" (501: llama-server without ``--metrics``).
NOT_SERVED = frozenset({404, 405, 501})
#: Largest count kept (as a heartbeat's, see :mod:`anyserve_router.load_reports`).
MAX_COUNT = 2**31 - 1

#: Prometheus sample name -> the signal it gives; counts summed over label sets, fractions the largest.
RUNNING = ("llamacpp:requests_processing", "vllm:num_requests_running")
QUEUED = ("llamacpp:requests_deferred", "vllm:num_requests_waiting")
CACHE_USE = ("llamacpp:kv_cache_usage_ratio", "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")
_WANTED = RUNNING + QUEUED + CACHE_USE

Store = Callable[[dict[str, Any]], None]


class TooLarge(ValueError):
    """An answer longer than its endpoint's bound: not read again."""


def _count(value: float) -> int | None:
    return min(int(value), MAX_COUNT) if math.isfinite(value) and value >= 0 else None


def metrics_signals(text: str) -> dict[str, Any]:
    """``running``, ``queued`` and ``cache_use`` from an engine's Prometheus text (those it has).

    Only the lines of the names read are parsed: an engine's exposition is
    mostly histograms nobody here needs. A malformed line raises ``ValueError``.
    """
    lines = [line for line in text.splitlines() if line.startswith(_WANTED)]
    running: list[float] = []
    queued: list[float] = []
    cache: list[float] = []
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            name = sample.name
            (running if name in RUNNING else queued if name in QUEUED else cache).append(sample.value)
    signals: dict[str, Any] = {}
    for name, values in (("running", running), ("queued", queued)):
        total = _count(sum(values)) if values else None
        if total is not None:
            signals[name] = total
    usable = [v for v in cache if math.isfinite(v)]
    if usable:
        signals["cache_use"] = min(1.0, max(0.0, max(usable)))
    return signals


def slots_signals(body: bytes) -> dict[str, Any]:
    """``slots`` (how many) and ``running`` (how many busy) from llama-server's ``/slots`` list, and ``prompts``.

    ``prompts`` is there when the engine lists what its slots hold
    (``LLAMA_SERVER_SLOTS_DEBUG=1``): per slot that holds anything, the
    prompt it last read followed by what it generated, the text its KV
    cache holds. Without it (the default), a slot lists no ``prompt``.
    """
    slots = json.loads(body)
    if not isinstance(slots, list) or not all(isinstance(s, dict) for s in slots):
        raise ValueError("GET /slots did not answer a list of slot objects")
    # ``is_processing`` in current llama-server; ``state`` (0 idle, 1 processing) in older ones.
    busy = sum(1 for s in slots if s.get("is_processing") is True or s.get("state") not in (None, 0))
    signals: dict[str, Any] = {"slots": min(len(slots), MAX_COUNT), "running": busy}
    listed = [s for s in slots if isinstance(s.get("prompt"), str)]
    if listed:
        signals[SIGNAL] = EngineCache.bounded([_held_text(s) for s in listed])
    return signals


def _held_text(slot: dict[str, Any]) -> str:
    """What one slot's cache holds as text; empty when it says it holds no token."""
    if slot.get("n_prompt_tokens") == 0:
        return ""
    generated = slot.get("generated")
    return slot["prompt"] + (generated if isinstance(generated, str) else "")


class EnginePoller:
    """Reads one engine's load about every :data:`POLL_SECONDS` and hands it to ``store``."""

    def __init__(
        self, engine_id: str, url: str, client: httpx.AsyncClient, store: Store, interval: float = POLL_SECONDS
    ) -> None:
        self.engine_id = engine_id
        self.url = url
        self.client = client
        self.store = store
        self.interval = interval
        #: The endpoints still asked: one the engine does not serve leaves.
        self.asking = ["/slots", "/metrics"]

    async def run(self) -> None:
        """Until cancelled (the engine is removed), or until the engine serves none of the endpoints."""
        while self.asking:
            try:
                signals = await self.read()
                if signals:
                    self.store(signals)
            except Exception:  # the poller must outlive any one failure
                log.exception("reading the load of engine %s failed", self.engine_id)
            await asyncio.sleep(self.interval)
        log.debug("engine %s serves neither /slots nor /metrics: its load is not read", self.engine_id)

    async def read(self) -> dict[str, Any]:
        """One reading of every endpoint still asked; what failed is left out."""
        signals: dict[str, Any] = {}
        for path in list(self.asking):
            try:
                body = await asyncio.wait_for(self._get(path), READ_TIMEOUT)
            except TooLarge as exc:
                log.warning("engine %s: %s; not asked again", self.engine_id, exc)
                self.asking.remove(path)
                continue
            except (httpx.HTTPError, OSError, ValueError, TimeoutError) as exc:
                log.debug("engine %s: reading %s failed: %s: %s", self.engine_id, path, type(exc).__name__, exc)
                continue
            if body is None:
                self.asking.remove(path)
                continue
            try:
                found = slots_signals(body) if path == "/slots" else metrics_signals(body.decode("utf-8", "replace"))
            except ValueError as exc:
                log.debug("engine %s: %s is not what was expected: %s", self.engine_id, path, exc)
                continue
            # /metrics comes second: its count of requests running is the engine's own, /slots' a snapshot of it.
            signals.update(found)
        return signals

    async def _get(self, path: str) -> bytes | None:
        """The body of ``GET path``, at most :data:`MAX_BYTES`; None when the engine does not serve it.

        The caller bounds the time (:data:`READ_TIMEOUT`, the whole answer).
        """
        limit = MAX_BYTES[path]
        request = self.client.build_request(
            "GET",
            f"{self.url}{path}",
            headers={"accept-encoding": "identity"},  # what is bounded is what arrives, never a compressed bomb
            timeout=httpx.Timeout(READ_TIMEOUT),
        )
        response = await self.client.send(request, stream=True)
        try:
            if response.status_code in NOT_SERVED:
                log.info(
                    "engine %s does not serve GET %s (%d); not asked again (llama-server serves /metrics with "
                    "--metrics, /slots unless --no-slots)",
                    self.engine_id,
                    path,
                    response.status_code,
                )
                return None
            response.raise_for_status()
            if response.headers.get("content-encoding", "identity") != "identity":
                raise ValueError(f"{path} came {response.headers['content-encoding']}-encoded, asked for identity")
            return await _bounded(response.aiter_raw(), limit, path)
        finally:
            await response.aclose()


async def _bounded(chunks: AsyncIterator[bytes], limit: int, path: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{path} answered more than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
