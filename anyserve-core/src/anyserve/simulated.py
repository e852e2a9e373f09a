"""A simulated inference engine: real timing behaviour, no model.

Loading a model costs ``load_seconds`` (the switching cost) and is paid only
when the requested model differs from the loaded one; generating costs
``token_delay`` per token. Examples and tests use it to show where a
capability-routed runtime saves time without shipping weights.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator


class SimulatedEngine:
    def __init__(self, load_seconds: float = 2.0, token_delay: float = 0.02) -> None:
        self.load_seconds = load_seconds
        self.token_delay = token_delay
        self.model: str | None = None
        self.loads = 0
        self._lock = threading.Lock()

    def load(self, model: str) -> float:
        """Make ``model`` the loaded one; returns the seconds the switch cost (0 when already loaded)."""
        with self._lock:
            if model == self.model:
                return 0.0
            began = time.perf_counter()
            time.sleep(self.load_seconds)
            self.model = model
            self.loads += 1
            return time.perf_counter() - began

    def generate(self, prompt: str, max_tokens: int = 16) -> Iterator[str]:
        """Tokens of a deterministic answer, one every ``token_delay`` seconds."""
        if self.model is None:
            raise RuntimeError("no model is loaded: call load(model) first")
        words = [f"[{self.model}]", *reversed(prompt.split())]
        for i in range(max_tokens):
            time.sleep(self.token_delay)
            yield (" " if i else "") + words[i % len(words)]
            if i + 1 >= len(words):
                return

    def complete(self, prompt: str, max_tokens: int = 16) -> str:
        return "".join(self.generate(prompt, max_tokens))
