"""Resolves settings into the parts a replica process runs with.

The agent and every worker process build the same :class:`Assembly`: the
agent from configuration, a worker from the JSON spec the agent hands it, so
both sides agree on transport, matcher and object store without re-reading
files or environment.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from anyserve.app import AnyServe
from anyserve.calls import router_caller
from anyserve.catalog import Catalog
from anyserve.config import Settings
from anyserve.matching import Matcher
from anyserve.objects import ObjectStore
from anyserve.plugins import PluginManager, get_plugin_manager
from anyserve.protocol.shapes import set_max_tensor_elements
from anyserve.records import TransportSpec
from anyserve.replica.apps import load_app
from anyserve.replica.worker import WorkerHost
from anyserve.transport import Transport


@dataclass
class Assembly:
    settings: Settings
    app_ref: str | None
    replica_id: str
    log_level: str = "WARNING"
    pm: PluginManager = field(default_factory=get_plugin_manager)

    def __post_init__(self) -> None:
        # The agent and every worker process build an Assembly: each bounds the tensors it decodes alike.
        set_max_tensor_elements(self.settings.replica.max_tensor_elements)
        # Resolve every name now: a typo fails at start-up, listing what is installed.
        self.catalog = Catalog(self.pm)
        self.transport_spec: TransportSpec = self.catalog.transport(self.settings)
        self.transport: Transport = self.transport_spec.factory(self.settings.transport.options)
        self.matcher: Matcher = self.catalog.matcher(self.settings).factory(self.settings.matcher.options)
        if self.settings.source_of("objects.url") != "default":
            # Configured on purpose: must resolve now. The default store is
            # resolved on first use, so a replica that never touches objects
            # runs without an object backend installed.
            self.catalog.object_backend(self.settings.objects.url)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Assembly:
        return cls(
            settings=Settings.model_validate(spec["settings"]),
            app_ref=spec["app"],
            replica_id=spec["replica_id"],
            log_level=spec.get("log_level", "WARNING"),
        )

    def spec(self, worker_id: str, address: str, worker_class: str | None = None) -> dict[str, Any]:
        """What a worker process needs to rebuild this assembly (JSON-safe)."""
        return {
            "settings": self.settings.model_dump(mode="json"),
            "app": self.app_ref,
            "replica_id": self.replica_id,
            "worker_id": worker_id,
            "worker_class": worker_class,
            "address": address,
            "parent_pid": os.getpid(),
            "log_level": self.log_level,
        }

    @functools.cached_property
    def app(self) -> AnyServe:
        return load_app(self.app_ref, self.pm)

    @functools.cached_property
    def objects(self) -> Callable[[], ObjectStore]:
        """Opens the object store on first use and keeps it."""
        url, options = self.settings.objects.url, self.settings.objects.options
        return functools.cache(lambda: self.catalog.object_backend(url).factory(url, options))

    def worker_host(self, worker_id: str, app: AnyServe | None = None, concurrency: int | None = None) -> WorkerHost:
        router_url = self.settings.router.url
        return WorkerHost(
            app or self.app,
            self.matcher,
            worker_id=worker_id,
            replica_id=self.replica_id,
            concurrency=concurrency or self.settings.replica.concurrency,
            objects=self.objects,
            caller=router_caller(router_url) if router_url else None,
        )

    async def start_host(
        self, worker_id: str, worker_class: str | None
    ) -> tuple[WorkerHost, Callable[[], Awaitable[None]]]:
        """The service a worker serves, and what to run when it stops.

        For a worker class this instantiates it and runs ``on_start`` first, so
        the worker's handshake (and with it "hot") comes only once it is loaded.
        """
        if worker_class is None:
            return self.worker_host(worker_id), _nothing
        spec = self.app.worker_class(worker_class)
        instance = spec.cls()
        await run_lifecycle_method(getattr(instance, "on_start", None))
        app = AnyServe(worker_class)
        for cap in spec.capabilities:
            if spec.unary:
                app.add_handler(cap, instance.handle)
            if spec.streaming:
                app.add_handler(cap, instance.handle_stream, stream=True)
        host = self.worker_host(worker_id, app, concurrency=spec.max_concurrency)
        return host, functools.partial(run_lifecycle_method, getattr(instance, "on_cleanup", None))

    async def serve_in_process(self, worker_id: str, address: str, worker_class: str | None) -> None:
        """An in-process transport's worker: the same life as a worker process, in a task."""
        host, cleanup = await self.start_host(worker_id, worker_class)
        try:
            await self.transport.serve(address, host)
        finally:
            host.close()
            await cleanup()


async def _nothing() -> None:
    return None


async def run_lifecycle_method(method: Callable[[], Any] | None) -> None:
    """Run a worker class's ``on_start`` or ``on_cleanup`` (absent: nothing to do).

    ``async def`` ones run on the loop, plain ones in a thread, because model loads block.
    """
    if method is None:
        return
    if inspect.iscoroutinefunction(method):
        await method()
    else:
        await asyncio.to_thread(method)
