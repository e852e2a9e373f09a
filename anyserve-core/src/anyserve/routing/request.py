"""What a routing decision knows about the request: :class:`RouteRequest`, built once per request at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anyserve.routing.blocks import PrefixMemo

#: Characters per prefix block when a scorer asks for none in particular (about 32 tokens of English).
DEFAULT_BLOCK_CHARS = 128
#: The recent prompts' hashes, shared by every request of this process.
MEMO = PrefixMemo()


@dataclass
class RouteRequest:
    """One request as the routing pipeline sees it.

    ``query`` is the capability query and ``stream`` the kind of call
    (``None``: either). ``session`` is what pins a conversation to a replica
    (the ``X-Session-Id`` header, else the OpenAI ``user`` field), and
    ``prompt`` the text an engine's prefix cache would hold: the chat
    messages or completion prompt as sent (``None`` where the front does not
    read the body, as for KServe requests). Scorers read what they need and
    leave the rest.
    """

    query: Mapping[str, Any]
    stream: bool | None = None
    session: str | None = None
    prompt: str | None = None
    request_id: str | None = None
    #: Every id the query matched, when the candidates are a sample of them (``[routing] sample``): what a
    #: scorer that places by the whole set (the session ring) needs. The same tuple while the set is the same.
    matched: tuple[str, ...] | None = None
    #: Block size -> the prompt's block hashes; made on first ask (most requests, KServe's, never ask).
    _blocks: dict[int, tuple[int, ...]] | None = field(default=None, repr=False, compare=False)

    def prefix_blocks(self, block_chars: int = DEFAULT_BLOCK_CHARS) -> tuple[int, ...]:
        """The prompt's chained block hashes (:func:`~anyserve.routing.blocks.block_hashes`), once per block size."""
        if self._blocks is None:
            self._blocks = {}
        found = self._blocks.get(block_chars)
        if found is None:
            found = MEMO.hashes(self.prompt, block_chars) if self.prompt else ()
            self._blocks[block_chars] = found
        return found


def chat_prompt(messages: Any) -> str | None:
    """The text of OpenAI chat ``messages`` in order, role by role, as a prefix cache sees a conversation grow.

    Content given as parts keeps its text parts; anything unreadable gives
    ``None`` (the request is routed without prefix affinity).
    """
    if not isinstance(messages, list):
        return None
    pieces: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"
            )
        pieces.append(f"{message.get('role', '')}\x1f{content if isinstance(content, str) else ''}\x1e")
    return "".join(pieces)
