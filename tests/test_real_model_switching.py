"""Two real models switching under a memory budget: SmolLM2-135M chat and all-MiniLM-L6-v2 embeddings.

As a user runs it: a router, and one replica started with no ``--app`` (it
serves what installed capability plugins contribute), narrowed by
``ANYSERVE_LOAD_PLUGINS`` to the llama.cpp engine plugin and the MiniLM
plugin (plus the CLI and the Unix transport it runs on), with
``--resources mem_mb=600``. The two worker classes declare what their loaded
model holds (``LlamaCpp`` 256 MiB, ``MiniLM`` 512 MiB): either fits, both do
not. OpenAI SDK calls alternate between them through the router, so every
request for the other model stops the idle one and loads its own; the
switches, with their cost, show in the replica's status and ``anyserve
status``, and at no moment are both loaded. Needs both optional installs
(``plugins/anyserve-engine-llamacpp/install.sh`` and
``plugins/anyserve-capability-minilm/install.sh``); skipped without either.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import installs
import pytest

from anyserve.status_client import replica_status

np = pytest.importorskip("numpy")


_missing = installs.missing(installs.ENGINE, installs.MINILM)
pytestmark = [
    pytest.mark.model,
    pytest.mark.engine,
    pytest.mark.skipif(_missing is not None, reason=f"{_missing} (optional real-model installs)"),
]

CHAT_MODEL, EMBED_MODEL = "smollm2-135m", "all-MiniLM-L6-v2"
CHAT, EMBED = "LlamaCpp", "MiniLM"  # the plugins' worker classes
# Distribution names: the CLI (for `start`), the two plugins, and the transport the replica uses.
ONLY_BOTH = {
    "ANYSERVE_LOAD_PLUGINS": "anyserve-cli,anyserve-engine-llamacpp,anyserve-capability-minilm,anyserve-transport-unix"
}
DECLARED = {CHAT: 256.0, EMBED: 512.0}  # the plugins' default mem_mb
BUDGET = 600  # either model fits; both (768) do not
LOADED = ("starting", "hot", "stopping")  # a worker class holding its resources
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
SENTENCES = ["A man is playing guitar.", "Someone plays a guitar.", "The stock market fell today."]
TIMEOUT = 120  # a request that switches waits for a stop and a load (MiniLM's imports torch: seconds)


def states(status: dict) -> dict[str, str]:
    return {c["worker"]: c["state"] for c in status["worker_classes"]}


def check_embeddings(vectors) -> np.ndarray:
    embedding = np.asarray(vectors, dtype=np.float32)
    assert embedding.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    sim = embedding @ embedding.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3 and sim[1, 2] < 0.3, sim  # related vs unrelated sentences
    return embedding


class Watcher(threading.Thread):
    """Samples the replica's status every 20 ms while the requests run: which classes hold memory, and how much."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.samples: list[tuple[dict[str, str], float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            status = replica_status(self.endpoint)
            self.samples.append((states(status), status["resources"]["in_use"].get("mem_mb", 0.0)))
            time.sleep(0.02)


def test_alternating_requests_switch_two_real_models_under_a_memory_budget(start_router, start_replica):
    pytest.importorskip("openai")
    import openai

    router = start_router()
    replica = start_replica(
        None, "--api-server", router.url, "--resources", f"mem_mb={BUDGET}", "--log-level", "info",
        transport="unix", ANYSERVE_LLAMACPP_THREADS="1", **ONLY_BOTH,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        replicas = httpx.get(f"{router.url}/registry", timeout=5).json()["replicas"]
        models = {cap.get("model") for r in replicas for cap in r["capabilities"]}
        if {CHAT_MODEL, EMBED_MODEL} <= models:
            break
        assert time.monotonic() < deadline, f"the replica did not register both models: {replicas}"
        time.sleep(0.1)

    status = replica_status(replica.endpoint)
    assert status["resources"]["budget"] == {"mem_mb": BUDGET}
    declared = {c["worker"]: c["resources"].get("mem_mb") for c in status["worker_classes"]}
    assert declared == DECLARED, status["worker_classes"]
    assert states(status) == {CHAT: "cold", EMBED: "cold"} and status["switches"] == []

    watcher = Watcher(replica.endpoint)
    watcher.start()
    answers, embeddings, took = [], [], []
    try:
        with openai.OpenAI(base_url=f"{router.url}/v1", api_key="anyserve", timeout=TIMEOUT, max_retries=0) as client:
            for kind in ("chat", "embed", "chat", "embed", "embed"):  # the last one finds its model loaded
                began = time.monotonic()
                if kind == "chat":
                    answer = client.chat.completions.create(
                        model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=32
                    )
                    assert answer.model == CHAT_MODEL and answer.choices[0].finish_reason == "stop", answer
                    answers.append(answer.choices[0].message.content)
                else:
                    answer = client.embeddings.create(model=EMBED_MODEL, input=SENTENCES)
                    assert answer.model == EMBED_MODEL and answer.usage.prompt_tokens > 0, answer
                    embeddings.append(check_embeddings([d.embedding for d in answer.data]))
                took.append((kind, time.monotonic() - began))
                # the request that was answered leaves its model loaded, and only it
                assert states(replica_status(replica.endpoint)) == {
                    CHAT: "hot" if kind == "chat" else "cold",
                    EMBED: "hot" if kind == "embed" else "cold",
                }
    finally:
        watcher.done.set()
        watcher.join()
    print("requests:", ", ".join(f"{kind} {seconds:.2f}s" for kind, seconds in took))

    # Every answer is right, and a model loaded again answers as it did before the switch.
    print("chat answers:", answers)
    assert all("4" in answer for answer in answers), answers
    assert answers[0] == answers[1]  # greedy: the same text from the reloaded model
    for later in embeddings[1:]:
        np.testing.assert_allclose(later, embeddings[0], atol=1e-5)

    # At no moment were both loaded: the budget held one at a time, starting and stopping included.
    assert len(watcher.samples) > 20, watcher.samples
    for classes, in_use in watcher.samples:
        holding = [name for name, state in classes.items() if state in LOADED]
        assert len(holding) <= 1 and in_use <= BUDGET, (classes, in_use)
    seen = [classes for classes, _ in watcher.samples]
    assert any(c[CHAT] == "starting" for c in seen) and any(c[EMBED] == "starting" for c in seen), seen

    # Each switch is recorded with its cost: a request for the other model stopped the idle one, then loaded its own.
    switches = replica_status(replica.endpoint)["switches"]
    print("switches:", "; ".join(f"{s['worker']} {s['action']} {s['seconds']:.2f}s ({s['reason']})" for s in switches))
    # (The fifth request, embed again, switched nothing.)
    assert [(s["worker"], s["action"]) for s in switches] == [
        (CHAT, "start"),
        (CHAT, "stop"), (EMBED, "start"),
        (EMBED, "stop"), (CHAT, "start"),
        (CHAT, "stop"), (EMBED, "start"),
    ]  # fmt: skip
    for s in switches:
        assert s["seconds"] > 0, s
        if s["action"] == "stop":
            assert s["reason"] == f"making room for {EMBED if s['worker'] == CHAT else CHAT}", s
        else:
            assert s["reason"].startswith("request for "), s
    # A request that switched waited for the stop and the load; the one that found its model loaded did not.
    switch_cost = switches[3]["seconds"] + switches[4]["seconds"]  # MiniLM stopped, SmolLM2 loaded
    assert took[2][1] >= switch_cost, (took, switches)
    assert took[4][1] < switches[5]["seconds"] + switches[6]["seconds"], (took, switches)

    # The router's copy of the replica's status (GET /registry) and `anyserve status` show the same.
    deadline = time.monotonic() + 10
    while True:
        (entry,) = httpx.get(f"{router.url}/registry", timeout=5).json()["replicas"]
        if len(entry.get("status", {}).get("switches", [])) == len(switches):
            break
        assert time.monotonic() < deadline, entry
        time.sleep(0.1)
    assert entry["status"]["switches"] == switches
    shown = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "status", router.url],
        capture_output=True, text=True, check=True, env={**os.environ, **ONLY_BOTH, "COLUMNS": "200"},
    ).stdout  # fmt: skip
    assert "recent switches" in shown and f"budget {{'mem_mb': {float(BUDGET)}}}" in shown, shown
    assert f"making room for {EMBED}" in shown and f"making room for {CHAT}" in shown, shown
    assert f"{switches[-1]['seconds']:.2f}" in shown, shown
