"""The per-request context a handler receives as its ``context`` argument."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from anyserve.errors import AnyServeError, InvalidRequest, ObjectStoreNotConfigured
from anyserve.objects import ObjRef, encode_ref_parameters

if TYPE_CHECKING:
    from anyserve.objects import ObjectStore
    from anyserve.protocol.messages import ModelInferRequest

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
        request_id: str = "",
        deadline: float | None = None,
    ) -> None:
        self.replica_id = replica_id
        #: The request's id, as logs and error messages name it.
        self.request_id = request_id
        #: ``time.monotonic()`` by which the caller wants the answer (a stream: its first response), if it said.
        #: Every request through the router has one (the client's, else ``router.default_deadline_seconds``).
        self.deadline = deadline
        self.query: Mapping[str, str] = dict(query or {})
        self._objects_factory = objects
        self._objects: ObjectStore | None = None
        self._caller = caller
        # A plain flag, not a threading.Event: one Context is built per request,
        # and setting or reading a bool is atomic in CPython.
        self._cancelled = False

    @property
    def objects(self) -> ObjectStore:
        """The configured object store (``objects.url``).

        Raises :class:`~anyserve.errors.ObjectStoreNotConfigured` (a
        ``RuntimeError``) when this context was built without one.
        """
        if self._objects is None:
            if self._objects_factory is None:
                raise ObjectStoreNotConfigured("no object store is configured for this replica (set objects.url)")
            self._objects = self._objects_factory()
        return self._objects

    def call(self, capability: Mapping[str, Any], inputs: Mapping[str, Any], **kwargs: Any) -> Any:
        """Call another capability through the router and return its outputs.

        ``inputs`` may hold :class:`~anyserve.objects.ObjRef` values (they
        travel as reference tensors), and so may ``parameters=`` (they travel
        as ``anyserve.objref.<name>`` string parameters); the callee reads
        both back as ObjRef with :meth:`inputs`, :meth:`parameters` or :meth:`ref`.
        """
        if self._caller is None:
            raise AnyServeError("context.call needs a router: start the replica with --api-server URL (router.url)")
        if kwargs.get("parameters"):
            kwargs["parameters"] = encode_ref_parameters(kwargs["parameters"])
        return self._caller(capability=capability, inputs=inputs, **kwargs)

    # -- reading the request ------------------------------------------------

    @staticmethod
    def inputs(request: ModelInferRequest, *, as_numpy: bool = False) -> dict[str, Any]:
        """The request's input tensors as Python values, by name.

        A tensor that carries object references (tensor parameter
        ``anyserve.objref``) gives :class:`~anyserve.objects.ObjRef` values,
        never bytes to guess at; resolve them with ``context.objects``. Text
        is ``str``, bytes ``bytes``, numbers stay numbers (see
        :func:`anyserve.tensors.decode_inputs`).
        """
        from anyserve.tensors import decode_inputs

        return decode_inputs(request, as_numpy=as_numpy)

    @staticmethod
    def parameters(request: ModelInferRequest) -> dict[str, Any]:
        """The request's parameters as Python values; ``anyserve.objref.<name>`` ones as ObjRef ``<name>``."""
        from anyserve.objects import decode_ref_parameters
        from anyserve.tensors import decode_parameters

        return decode_ref_parameters(decode_parameters(request.parameters))

    def ref(self, request: ModelInferRequest, name: str = "data") -> ObjRef:
        """The one reference named ``name``: an input tensor holding a single ObjRef, else a request parameter.

        Raises :class:`~anyserve.errors.InvalidRequest` naming what the
        request holds when there is no such reference.
        """
        inputs = {t.name for t in request.inputs}
        if name in inputs:
            value = self.inputs(request).get(name)
            while isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, ObjRef):
                return value
            raise InvalidRequest(
                f"input {name!r} is not a single object reference (a BYTES tensor with the "
                f"'anyserve.objref' parameter), got {type(value).__name__}"
            )
        value = self.parameters(request).get(name)
        if isinstance(value, ObjRef):
            return value
        raise InvalidRequest(
            f"the request carries no object reference named {name!r} "
            f"(inputs: {sorted(inputs) or 'none'}, parameters: {sorted(request.parameters) or 'none'})"
        )

    @property
    def cancelled(self) -> bool:
        """True once the client cancelled or the deadline passed."""
        if not self._cancelled and self.deadline is not None and time.monotonic() >= self.deadline:
            self._cancelled = True
        return self._cancelled

    def time_remaining(self) -> float | None:
        """Seconds left before :attr:`deadline` (never negative), ``None`` without one: bound a model's work by it."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def cancel(self) -> None:
        """Called by the runtime; long loops in handlers may poll :attr:`cancelled`."""
        self._cancelled = True
