"""The user-facing application object and its handler registry."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from anyserve.capability import Capability
from anyserve.protocol import names
from anyserve.tensors.outputs import TensorSpec, tensor_specs
from anyserve.workers import WorkerClass, make_worker_class

F = TypeVar("F", bound=Callable[..., Any])

# How many positional parameters a handler may take (user API: apps are written against it):
#   unary:  handler(request) or handler(request, context)
#   stream: handler(request, stream) or handler(request, context, stream)
_ARITIES = {False: (1, 2), True: (2, 3)}


@dataclass(frozen=True)
class Handler:
    """One registered capability handler."""

    capability: Capability
    func: Callable[..., Any]
    stream: bool
    arity: int
    is_async: bool
    #: The tensors the handler declares it reads and writes (KServe model metadata).
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))

    def describe(self) -> dict[str, Any]:
        """The handshake form: the capability's attributes plus ``stream``."""
        return {**self.capability.to_dict(), "stream": self.stream} if self.stream else self.capability.to_dict()

    def tensors(self) -> dict[str, list[dict[str, Any]]]:
        """The declared inputs and outputs, as ``ModelMetadata`` lists them."""
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


def _positional_arity(func: Callable[..., Any]) -> int:
    params = inspect.signature(func).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class AnyServe:
    """An application: the capabilities a replica serves and their handlers.

    ::

        app = AnyServe()

        @app.capability(type="chat", model="llama-70b")
        def chat(request, context):
            ...
    """

    def __init__(self, name: str = "anyserve") -> None:
        self.name = name
        self.handlers: list[Handler] = []
        self.worker_classes: list[WorkerClass] = []

    def capability(
        self,
        stream: bool = False,
        *,
        inputs: Iterable[Any] | None = None,
        outputs: Iterable[Any] | None = None,
        **attrs: Any,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``Capability(**attrs)``.

        Plain functions run in a worker's thread pool, ``async def`` ones on
        its event loop. A unary handler returns a ``ModelInferResponse`` or a
        mapping of output name to value (``{"sum": [3]}``). A streaming
        handler (``stream=True``) sends responses through its ``stream``
        argument and returns nothing; ``stream.send`` blocks a plain handler
        while its reader is behind, and an ``async`` one awaits
        ``stream.drain()`` after sending.

        ``inputs`` and ``outputs`` declare the handler's tensors, as
        ``(name, datatype, shape)`` tuples (``-1`` for any size): KServe
        model metadata lists them, and returned values are encoded as the
        declared datatype.
        """
        if not attrs:
            raise TypeError("@app.capability needs at least one attribute, e.g. type='chat'")
        cap = Capability(attrs)

        def decorator(func: F) -> F:
            self.add_handler(cap, func, stream=stream, inputs=inputs, outputs=outputs)
            return func

        return decorator

    def add_handler(
        self,
        capability: Capability | Mapping[str, Any],
        func: Callable[..., Any],
        *,
        stream: bool = False,
        inputs: Iterable[Any] | None = None,
        outputs: Iterable[Any] | None = None,
    ) -> Handler:
        """Register ``func`` without the decorator (plugins and generated apps use this)."""
        cap = capability if isinstance(capability, Capability) else Capability(capability)
        arity = _positional_arity(func)
        allowed = _ARITIES[stream]
        if arity not in allowed:
            shape = "(request, [context,] stream)" if stream else "(request[, context])"
            raise TypeError(
                f"handler {getattr(func, '__qualname__', func)!r} for {cap!r} takes {arity} "
                f"positional parameters; a {'streaming' if stream else 'unary'} handler takes {shape}"
            )
        for existing in self.handlers:
            if existing.capability == cap and existing.stream == stream:
                raise ValueError(f"{cap!r} already has a {'streaming ' if stream else ''}handler: {existing.name}")
        handler = Handler(
            capability=cap,
            func=func,
            stream=stream,
            arity=min(arity, allowed[-1]),
            is_async=inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func),
            inputs=tensor_specs(inputs, f"inputs of {cap!r}"),
            outputs=tensor_specs(outputs, f"outputs of {cap!r}"),
        )
        self.handlers.append(handler)
        return handler

    # -- the LLM convention (anyserve.llm) ---------------------------------------------

    def chat(self, model: str, **attrs: Any) -> Callable[[F], F]:
        """Register a chat function for ``{type: chat, model: model, **attrs}``, streamed and unary.

        The function takes an :class:`anyserve.llm.ChatRequest` (and
        optionally the context) and yields ``str`` deltas or
        :class:`anyserve.llm.Delta` values; plain generators run in the
        worker's thread pool, ``async`` ones on its event loop. The same
        function then answers ``/v1/chat/completions``, ``/infer/stream``,
        ``ModelStreamInfer``, ``ModelInfer`` and Triton's ``generate``.
        """
        from anyserve.llm import generate_handlers, read_chat

        return self._generate("chat", model, attrs, generate_handlers, read_chat, names.MESSAGES_INPUT)

    def completion(self, model: str, **attrs: Any) -> Callable[[F], F]:
        """Register a text-completion function for ``{type: completion, model: model, **attrs}``.

        As :meth:`chat`, with an :class:`anyserve.llm.CompletionRequest`
        (a ``prompt``): it answers ``/v1/completions`` and Triton's ``generate``.
        """
        from anyserve.llm import generate_handlers, read_completion

        return self._generate("completion", model, attrs, generate_handlers, read_completion, names.TEXT_INPUT)

    def embed(self, model: str, **attrs: Any) -> Callable[[F], F]:
        """Register an embed function for ``{type: embed, model: model, **attrs}`` (unary).

        The function takes an :class:`anyserve.llm.EmbedRequest` (``texts``)
        and returns one vector per text: a list of lists, a 2-D numpy array,
        or :class:`anyserve.llm.Embeddings` to report the tokens read too.
        """
        from anyserve.llm import embed_handler

        cap = Capability({"type": "embed", "model": model, **attrs})

        def decorator(func: F) -> F:
            self.add_handler(
                cap,
                embed_handler(func),
                inputs=[(names.TEXT_INPUT, "BYTES", [-1])],
                outputs=[(names.EMBEDDING_OUTPUT, "FP32", [-1, -1])],
            )
            return func

        return decorator

    def _generate(
        self, kind: str, model: str, attrs: Mapping[str, Any], build: Any, read: Any, input_name: str
    ) -> Callable[[F], F]:
        cap = Capability({"type": kind, "model": model, **attrs})
        inputs = [(input_name, "BYTES", [1])]
        outputs = [(names.TEXT_OUTPUT, "BYTES", [1]), (names.FINISH_REASON_OUTPUT, "BYTES", [1])]

        def decorator(func: F) -> F:
            stream_handler, unary_handler = build(func, read)
            for handler in (stream_handler, unary_handler):
                handler.__qualname__ = getattr(func, "__qualname__", repr(func))
            self.add_handler(cap, stream_handler, stream=True, inputs=inputs, outputs=outputs)
            self.add_handler(cap, unary_handler, inputs=inputs, outputs=outputs)
            return func

        return decorator

    def worker(
        self,
        capabilities: list[Mapping[str, Any]],
        *,
        resources: Mapping[str, float] | None = None,
        idle_timeout: float | None = None,
        max_concurrency: int = 1,
        start_timeout: float = 600.0,
    ) -> Callable[[type], type]:
        """Register a worker class (see :mod:`anyserve.workers`): started on demand, stopped when idle."""

        def decorator(cls: type) -> type:
            spec = make_worker_class(
                cls,
                capabilities,
                resources=resources,
                idle_timeout=idle_timeout,
                max_concurrency=max_concurrency,
                start_timeout=start_timeout,
            )
            if any(w.name == spec.name for w in self.worker_classes):
                raise ValueError(f"a worker class named {spec.name!r} is already registered")
            self.worker_classes.append(spec)
            return cls

        return decorator

    def worker_class(self, name: str) -> WorkerClass:
        for spec in self.worker_classes:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def empty(self) -> bool:
        """Nothing to serve: no handler and no worker class."""
        return not self.handlers and not self.worker_classes

    def capabilities(self) -> list[Capability]:
        """Every capability offered, in registration order, without duplicates."""
        caps = [h.capability for h in self.handlers] + [c for w in self.worker_classes for c in w.capabilities]
        return list(dict.fromkeys(caps))

    def candidates(self, query: Mapping[str, Any], *, stream: bool) -> Iterable[Handler]:
        """Handlers of the right kind whose capability satisfies ``query`` (subset rule)."""
        return (h for h in self.handlers if h.stream == stream and h.capability.matches(query))

    def __repr__(self) -> str:
        return f"AnyServe({self.name!r}, capabilities={self.capabilities()!r})"
