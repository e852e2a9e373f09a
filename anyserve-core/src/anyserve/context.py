"""The per-request context a handler receives as its ``context`` argument."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from anyserve.errors import AnyServeError

if TYPE_CHECKING:
    from anyserve.objects import ObjectStore

Caller = Callable[..., Any]


class Context:
    """What a handler may use besides its request: objects, calls, cancellation.

    The runtime builds one per request. ``objects`` opens the configured
    object store on first use, so handlers that never touch objects never pay
    for it.
    """

    def __init__(
        self,
        *,
        replica_id: str = "",
        query: Mapping[str, str] | None = None,
        objects: Callable[[], ObjectStore] | None = None,
        caller: Caller | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.query: Mapping[str, str] = dict(query or {})
        self._objects_factory = objects
        self._objects: ObjectStore | None = None
        self._caller = caller
        self._cancelled = threading.Event()

    @property
    def objects(self) -> ObjectStore:
        """The configured object store (``objects.url``)."""
        if self._objects is None:
            if self._objects_factory is None:
                raise AnyServeError("no object store is configured for this replica (set objects.url)")
            self._objects = self._objects_factory()
        return self._objects

    def call(self, capability: Mapping[str, Any], inputs: Mapping[str, Any], **kwargs: Any) -> Any:
        """Call another capability through the router and return its outputs."""
        if self._caller is None:
            raise AnyServeError("context.call needs a router: start the replica with --api-server URL (router.url)")
        return self._caller(capability=capability, inputs=inputs, **kwargs)

    @property
    def cancelled(self) -> bool:
        """True once the client cancelled or the deadline passed."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Called by the runtime; long loops in handlers may poll :attr:`cancelled`."""
        self._cancelled.set()
