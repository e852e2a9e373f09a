"""The records that registration hooks contribute.

Each record is a name plus a *factory*: core keeps the records of every
plugin and calls only the factory that configuration selects, so an
installed-but-unused plugin costs nothing beyond its import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anyserve.encoding import StreamEncoder
    from anyserve.matching import Matcher
    from anyserve.objects import ObjectStore
    from anyserve.routing.stages import Filter, Picker, Scorer
    from anyserve.transport import Transport

Options = Mapping[str, Any]


@dataclass(frozen=True)
class TransportSpec:
    """An IPC transport between a replica's agent and its workers.

    ``in_process`` transports are served by the agent itself (one worker in
    the agent's event loop) instead of by spawned worker processes.
    ``network`` transports serve ``host:port`` addresses, so they can also
    carry the router -> replica link (the ``[link]`` setting).
    """

    name: str
    factory: Callable[[Options], Transport]
    description: str = ""
    in_process: bool = False
    network: bool = False


@dataclass(frozen=True)
class ObjectBackendSpec:
    """An object-store backend, selected by the scheme of ``objects.url``."""

    name: str
    schemes: tuple[str, ...]
    factory: Callable[[str, Options], ObjectStore]
    description: str = ""


@dataclass(frozen=True)
class StreamEncodingSpec:
    """How the router writes a stream of responses to an HTTP client."""

    name: str
    media_type: str
    factory: Callable[[Options], StreamEncoder]
    description: str = ""


@dataclass(frozen=True)
class MatcherSpec:
    """A capability matcher: scores an offered capability against a query."""

    name: str
    factory: Callable[[Options], Matcher]
    description: str = ""


@dataclass(frozen=True)
class RoutingStageSpec:
    """A stage of the routing pipeline: a ``filter``, a ``scorer`` or a ``picker`` (see :mod:`anyserve.routing`).

    ``factory`` gets the options configured for the stage
    (``[routing.options.<name>]``) and returns the stage, built once per process.
    """

    name: str
    kind: str
    factory: Callable[[Options], Filter | Scorer | Picker]
    description: str = ""
