"""What an engine reports it caches, and how much of a prompt that covers: the ``prefix`` scorer's precise half.

The ``prefix`` scorer otherwise learns from the router's own decisions,
which cannot see an engine evict, restart, or serve a client that came
another way. Some engines say what they hold. llama.cpp's ``llama-server``
lists, for each slot, the prompt it last read and the text it generated
(``GET /slots`` when started with ``LLAMA_SERVER_SLOTS_DEBUG=1``): the
tokens that slot's KV cache holds, detokenized. That text is the
conversation rendered through the model's chat template, while the router
knows the messages themselves (:func:`~anyserve.routing.request.chat_prompt`).
A template only puts markers around each message's content (a role
header, an end-of-turn token, at the start perhaps a BOS token or a
default system prompt), so the covered part of a prompt is found by
content: each message's text must follow the previous one's within
:data:`MAX_GAP` characters, and the first one must start within
:data:`LEAD`. A message the cached text only begins (a long document
followed by another question, a conversation cut short) counts up to
where the two part.

No tokenizer and no template are needed, so it holds for any model the
engine serves; a template that rewrites a message's content (more than
trimming its ends) hides that message and the ones after it, which only
costs a cache hit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Characters of template allowed before the first message's content: a BOS token, a default system
#: prompt, a "Cutting Knowledge Date" line.
LEAD = 1024
#: Characters of template allowed between two messages' contents: end-of-turn and role markers.
MAX_GAP = 256
#: Leading characters a message is looked for by, before it is compared whole.
PROBE = 32
#: Places a probe is tried at, at most, per message: a repetitive text must not make one look-up cost thousands.
TRIES = 8
#: Characters compared at a time where a message is held in part: the cost follows what is held, not its square.
STEP = 1024
#: The signal key under which an engine's report travels in a candidate's ``signals``.
SIGNAL = "prompts"
#: Texts kept per report, and characters per text: a report's memory is bounded whatever the engine sends.
MAX_TEXTS = 256
MAX_TEXT_CHARS = 1024 * 1024


def pieces(prompt: str) -> list[tuple[int, str]]:
    """``(characters in the prompt, content with its ends trimmed)`` per message of a router prompt.

    The router's prompt for chat is ``role \\x1f content \\x1e`` per message
    (:func:`~anyserve.routing.request.chat_prompt`); a completion's prompt
    is its text, one piece. Contents are trimmed, as templates often do.
    """
    if not prompt.endswith("\x1e"):
        return [(len(prompt), prompt.strip())]
    out: list[tuple[int, str]] = []
    for message in prompt[:-1].split("\x1e"):
        _, _, content = message.partition("\x1f")
        out.append((len(message) + 1, content.strip()))
    return out


def held_chars(parts: Sequence[tuple[int, str]], text: str) -> int:
    """How many characters of the prompt, from its start, ``text`` (a cached conversation) holds.

    A message counts whole when its content is found after the previous
    one's within the allowed gap; the first message not found whole counts
    for as much of its content as the text continues it with. Each message
    is looked for by its first :data:`PROBE` characters, then compared
    whole where they are: ``str.find`` with a whole system prompt as the
    needle would prepare that needle again for every slot. A message held
    only in part is measured where its probe was first found.
    """
    held = 0
    at = 0
    gap = LEAD
    for size, body in parts:
        if not body:
            held += size
            continue
        probe = body[:PROBE]
        end = at + gap + len(probe)
        found = first = text.find(probe, at, end)
        tries = TRIES
        while found >= 0 and not text.startswith(body, found):  # a memcmp, no copy
            tries -= 1
            found = text.find(probe, found + 1, end) if tries else -1
        if found < 0:  # held in part, if at all: measured where the probe was first found
            return held + (_common(body, text, first) if first >= 0 else 0)
        held += size
        at = found + len(body)
        gap = MAX_GAP
    return held


def _common(body: str, text: str, at: int) -> int:
    """The length of the longest beginning of ``body`` that ``text`` has at ``at``.

    :data:`STEP` characters at a time while they agree, then a binary search
    within the step where they part: each comparison copies at most a step
    of ``body``, so a report of long texts costs what they share, once.
    """
    most = min(len(body), len(text) - at)
    low = 0
    while low + STEP <= most and text.startswith(body[low : low + STEP], at + low):
        low += STEP
    high = min(low + STEP, most)
    while low < high:
        middle = (low + high + 1) // 2
        if text.startswith(body[low:middle], at + low):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True, slots=True)
class EngineCache:
    """The cached conversations one engine reported at one reading, as texts (one per llama-server slot)."""

    texts: tuple[str, ...]
    #: ``time.monotonic()`` of the reading: a report too old is not trusted.
    read_at: float = field(default_factory=time.monotonic)

    @classmethod
    def bounded(cls, texts: Sequence[str]) -> EngineCache:
        """A report of at most :data:`MAX_TEXTS` texts of at most :data:`MAX_TEXT_CHARS`, empty ones left out."""
        return cls(tuple(t[:MAX_TEXT_CHARS] for t in texts[:MAX_TEXTS] if t))

    def share(self, prompt: str, parts: Sequence[tuple[int, str]] | None = None) -> float:
        """The largest share of ``prompt`` (0.0 to 1.0), from its start, that one of the cached texts holds."""
        if not prompt or not self.texts:
            return 0.0
        parts = pieces(prompt) if parts is None else parts
        return max(held_chars(parts, text) for text in self.texts) / len(prompt)

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.read_at

    def listed(self) -> dict[str, Any]:
        """What ``GET /registry`` shows of it: sizes and age, never the prompts themselves."""
        return {"texts": len(self.texts), "chars": sum(map(len, self.texts)), "age_s": round(self.age(), 3)}
