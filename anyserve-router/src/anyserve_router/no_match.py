"""What a client is told when no replica serves its request (404) or none answered (502).

Kept out of forwarding: the messages list what is known without naming
replicas or endpoints, and the list of known capabilities is made once per
registry version, not per unmatched request.
"""

from __future__ import annotations

from collections.abc import Mapping

from anyserve.matching import Matcher
from anyserve.protocol import RequestMeta, dumps
from anyserve_router import selection
from anyserve_router.registry import ReplicaRegistry

#: Most known capabilities a 404 message lists.
SHOWN_CAPABILITIES = 20
#: Most characters of known capabilities a 404 message shows.
SHOWN_CHARS = 2000


class Messages:
    """The router's 404 and 502 texts, from the registry as it stands."""

    def __init__(self, registry: ReplicaRegistry, matcher: Matcher, matches: selection.MatchCache) -> None:
        self.registry = registry
        self.matcher = matcher
        self.matches = matches
        #: The 404 message's list of known capabilities, and the registry version it was made at.
        self._known: tuple[int, str] | None = None

    def no_match(
        self,
        query: Mapping[str, str],
        exclude: set[str] | frozenset[str],
        delegated_from: str | None,
        stream: bool | None,
    ) -> str:
        """Why nothing serves ``query``: it is served only the other way, or by no live replica (known ones listed)."""
        shown_query = dumps(dict(query)).decode()
        if stream is not None and selection.candidates(
            self.registry, query, self.matcher, exclude=exclude, stream=not stream, cache=self.matches
        ):
            if stream:
                return f"{shown_query} is served only as a unary call, not as a stream: use POST /infer"
            return f"{shown_query} is served only as a stream: use POST /infer/stream (gRPC: ModelStreamInfer)"
        shown = self.known_capabilities()
        others = [i for i in exclude if i != delegated_from]
        why = ""
        if delegated_from is not None:
            why += f" other than {delegated_from!r} (which delegated the request)"
        if others:
            why += f" ({len(others)} did not answer)"
        return f"no live replica{why} offers a capability matching {shown_query}; known: {shown}"

    def known_capabilities(self) -> str:
        """What a 404 lists, made once per registry version: unmatched requests must not each sort every offer."""
        version = self.registry.version
        if self._known is None or self._known[0] != version:
            known = self.registry.known_capabilities()
            shown = ", ".join(dumps(c).decode() for c in known[:SHOWN_CAPABILITIES]) or "none (no live replicas)"
            if len(shown) > SHOWN_CHARS:
                shown = shown[:SHOWN_CHARS] + "..."
            if len(known) > SHOWN_CAPABILITIES:
                shown += f" and {len(known) - SHOWN_CAPABILITIES} more"
            self._known = (version, shown)
        return self._known[1]

    @staticmethod
    def unreachable(meta: RequestMeta, tried: int) -> str:
        """Which replicas and where stay in the router's log; the client learns what happened."""
        shown = dumps(dict(meta.query)).decode()
        if tried > 1:
            what = f"the {tried} replicas tried for {shown} did not answer"
        else:
            what = f"the replica chosen for {shown} did not answer and no other live replica matches"
        return f"{what} (request {meta.request_id or '-'}; the router's log names them)"
