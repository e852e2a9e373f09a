"""Session and prefix-cache affinity end to end: `anyserve router` in front of two replicas of one chat model.

Both replicas run ``tests/apps/llm_app.py`` (a fake engine: the tests are
about where requests go, not what a model answers) and register themselves
with the router; the ``X-Served-By`` header says which one answered. Each
router gets its own state directory, so what one saves at shutdown is read
back by its successor and by no other test.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from processes import Replica, Router

MODEL = "tiny-chat"
REPLICAS = ("llm-a", "llm-b")
SYSTEM_A = "You are the support assistant of a bicycle shop. Answer politely, in two sentences at most. " * 3
SYSTEM_B = "You translate whatever the user writes into French, keeping names and numbers as they are. " * 3


@dataclass
class Cluster:
    router: Router
    http: httpx.Client
    state: Path


def wait_registered(url: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(httpx.get(f"{url}/registry", timeout=5).json()["replicas"]) < count:
        assert time.monotonic() < deadline, f"fewer than {count} replicas registered with {url}"
        time.sleep(0.05)


def start_cluster(
    start_router: Callable[..., Router],
    start_replica: Callable[..., Replica],
    http_to: Callable[[str], httpx.Client],
    state: Path,
    scorers: str,
) -> Cluster:
    """A router routing with ``scorers`` and two llm_app replicas registered with it, sharing ``state`` for tokens."""
    env = {"ANYSERVE_STATE_DIR": str(state)}
    router = start_router(ANYSERVE_ROUTING_SCORERS=scorers, **env)
    for replica_id in REPLICAS:
        start_replica("llm_app:app", "--api-server", router.url, "--replica-id", replica_id, **env)
    wait_registered(router.url, len(REPLICAS))
    return Cluster(router, http_to(router.url), state)


def chat(http: httpx.Client, messages: list[dict[str, str]], **extra: Any) -> tuple[str, str]:
    """(the replica that answered, the answer's text)."""
    headers = extra.pop("headers", {})
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["X-Served-By"], response.json()["choices"][0]["message"]["content"]


class Conversation:
    """A chat that grows as a client's does: every turn sends the whole history, the last answer included."""

    def __init__(self, system: str) -> None:
        self.messages = [{"role": "system", "content": system}]

    def turn(self, http: httpx.Client, question: str) -> str:
        self.messages.append({"role": "user", "content": question})
        served_by, answer = chat(http, self.messages)
        self.messages.append({"role": "assistant", "content": answer})
        return served_by


def test_conversations_stay_with_their_prefix_across_a_router_restart(
    start_router, start_replica, http_to, tmp_path: Path
):
    cluster = start_cluster(start_router, start_replica, http_to, tmp_path, "prefix=2,least_load=1")
    shop, french = Conversation(SYSTEM_A), Conversation(SYSTEM_B)
    shop_home = shop.turn(cluster.http, "Do you repair tubeless tyres on gravel bikes?")
    french_home = french.turn(cluster.http, "Good morning, my name is Ada and I have 3 cats.")
    assert shop_home != french_home  # nothing cached anywhere for the second: it goes to the other replica
    for question in ("How long does it take?", "And what does it cost for both wheels?", "Can I wait there?"):
        assert shop.turn(cluster.http, question) == shop_home
        assert french.turn(cluster.http, question) == french_home

    # A clean stop saves what the router learned; its successor reads it back.
    cluster.router.process.signal(signal.SIGINT)
    cluster.router.process.proc.wait(timeout=20)
    saved = json.loads((tmp_path / "routing-prefix.json").read_text())
    assert set(saved["replicas"]) == set(REPLICAS)
    port = int(cluster.router.url.rsplit(":", 1)[1])
    successor = start_router(
        port=port, ANYSERVE_ROUTING_SCORERS="prefix=2,least_load=1", ANYSERVE_STATE_DIR=str(tmp_path)
    )
    wait_registered(successor.url, len(REPLICAS))  # the replicas register again on their next heartbeat
    http = http_to(successor.url)
    # The first request after the restart would be a tie for a router that knew nothing (and go to llm-a,
    # first in turn): each conversation goes home because the index was restored.
    assert french_home == "llm-b" and shop_home == "llm-a"
    assert french.turn(http, "Thank you, see you tomorrow.") == french_home
    assert shop.turn(http, "Thank you, see you tomorrow.") == shop_home


def test_one_session_stays_on_one_replica(start_router, start_replica, http_to, tmp_path: Path):
    cluster = start_cluster(start_router, start_replica, http_to, tmp_path, "session=2,least_load=1")
    http = cluster.http
    by_header = {
        chat(http, [{"role": "user", "content": f"question {i}"}], headers={"X-Session-Id": "ticket-4711"})[0]
        for i in range(6)
    }
    assert len(by_header) == 1
    by_user = {
        chat(http, [{"role": "user", "content": f"question {i}"}], user="alice@example.com")[0] for i in range(6)
    }
    assert len(by_user) == 1
    # many sessions still use both replicas: the ring spreads them
    spread = {
        chat(http, [{"role": "user", "content": "hello"}], headers={"X-Session-Id": f"ticket-{i}"})[0]
        for i in range(16)
    }
    assert spread == set(REPLICAS)
