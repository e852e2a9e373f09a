"""all-MiniLM-L6-v2 served end to end by the minilm capability plugin (plugins/anyserve-capability-minilm).

The replica is started with no ``--app``, so it serves what installed
capability plugins contribute; ``ANYSERVE_LOAD_PLUGINS`` narrows those to
the minilm plugin (plus the CLI and the Unix transport it runs on), so other
installed capability plugins cannot interfere. Needs the optional model
install (``plugins/anyserve-capability-minilm/install.sh``); skipped without it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import installs
import pytest
from processes import Router

from anyserve import Client
from anyserve.status_client import replica_status

np = pytest.importorskip("numpy")


_missing = installs.missing(installs.MINILM)
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        _missing is not None,
        reason=f"{_missing} (optional model install)",
    ),
]

CAPABILITY = {"type": "embed", "model": "all-MiniLM-L6-v2"}
# Distribution names: the CLI (for `start`), the plugin, and the transport the replica uses.
ONLY_MINILM = {"ANYSERVE_LOAD_PLUGINS": "anyserve-cli,anyserve-capability-minilm,anyserve-transport-unix"}
SENTENCES = ["A man is playing guitar.", "Someone plays a guitar.", "The stock market fell today."]
FIRST_CALL_TIMEOUT = 120  # the first request imports torch and loads the model


def check_similarities(embedding, how: str) -> None:
    embedding = np.asarray(embedding, dtype=np.float32)
    assert embedding.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    sim = embedding @ embedding.T
    print(f"{how}: related {sim[0, 1]:.3f}, unrelated {sim[0, 2]:.3f} / {sim[1, 2]:.3f}")
    assert sim[0, 1] > 0.6, sim
    assert sim[0, 2] < 0.3 and sim[1, 2] < 0.3, sim


def test_a_replica_with_no_app_serves_the_plugin(start_replica):
    replica = start_replica(None, transport="unix", **ONLY_MINILM)
    with Client(replica.endpoint, capability=CAPABILITY, timeout=FIRST_CALL_TIMEOUT) as client:
        result = client.infer("embed", {"text": SENTENCES}, as_numpy=True)
        check_similarities(result["embedding"], "replica")
        assert result["embedding"].dtype == np.float32

        one = client.infer("embed", {"text": "Someone plays a guitar."}, as_numpy=True)["embedding"]
        np.testing.assert_allclose(one[0], result["embedding"][1], atol=1e-5)
        # the LLM convention's input name works as well as the plugin's original `text`
        again = client.infer("embed", {"text_input": SENTENCES}, as_numpy=True)
        np.testing.assert_allclose(again["embedding"], result["embedding"], atol=1e-5)
        assert again.parameters["prompt_tokens"] >= sum(len(s.split()) + 2 for s in SENTENCES)
        assert client.is_model_ready("embed", capability=CAPABILITY)
        assert not client.is_model_ready("echo", capability={"type": "echo"})  # nothing else is served


LOADED = "loaded all-MiniLM-L6-v2 in"  # what the model module logs (level INFO) once the model is in memory


def embed_state(endpoint: str) -> str | None:
    """The embed capability's state in the replica's own status (``anyserve status HOST:PORT``).

    A plain handler's running worker counts as hot, as the replica reports it
    to the router; a worker class has its own state.
    """
    status = replica_status(endpoint)
    if any(CAPABILITY.items() <= cap.items() for w in status["workers"] for cap in w["capabilities"]):
        return "hot"
    for worker_class in status["worker_classes"]:
        if any(CAPABILITY.items() <= cap.items() for cap in worker_class["capabilities"]):
            return worker_class["state"]
    return None


def test_hot_means_the_model_is_loaded(start_replica):
    replica = start_replica(None, "--log-level", "info", transport="unix", **ONLY_MINILM)
    assert embed_state(replica.endpoint) == "cold"  # served on demand, nothing loaded yet: not hot
    assert LOADED not in replica.process.output()

    result: dict[str, object] = {}

    def first_request() -> None:
        with Client(replica.endpoint, capability=CAPABILITY, timeout=FIRST_CALL_TIMEOUT) as client:
            result["embedding"] = client.infer("embed", {"text": SENTENCES}, as_numpy=True)["embedding"]

    caller = threading.Thread(target=first_request)
    caller.start()
    seen = []
    while caller.is_alive():
        state = embed_state(replica.endpoint)
        if state == "hot" and "hot" not in seen:
            # hot is only ever reported once the worker has loaded the model (logged before its handshake)
            replica.process.wait_for(LOADED, timeout=5)
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.05)
    caller.join()
    assert "embedding" in result, "the first request failed"
    check_similarities(result["embedding"], "first request")
    assert "starting" in seen, seen  # loading takes seconds (torch and the weights): the replica says so
    assert "hot" not in seen[: seen.index("starting")], seen
    assert embed_state(replica.endpoint) == "hot"
    replica.process.wait_for(LOADED, timeout=5)


def _router_available() -> bool:
    probe = [sys.executable, "-m", "anyserve_cli", "router", "--help"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _wait_for_embed(router: Router, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        replicas = httpx.get(f"{router.url}/registry", timeout=5).json()["replicas"]
        if any(CAPABILITY.items() <= cap.items() for r in replicas for cap in r["capabilities"]):
            return
        assert time.monotonic() < deadline, f"no replica registered {CAPABILITY} within {timeout}s: {replicas}"
        time.sleep(0.1)


def _offer_state(router: Router) -> str:
    """The state of the embed offer in the router's ``GET /registry`` (an offer without one is hot)."""
    replicas = httpx.get(f"{router.url}/registry", timeout=5).json()["replicas"]
    [offer] = [cap for r in replicas for cap in r["capabilities"] if CAPABILITY.items() <= cap.items()]
    return str(offer.get("state", "hot"))


def test_embeddings_through_the_router(start_router, start_replica):
    if not _router_available():
        pytest.skip("`anyserve router` is not available (anyserve-router not installed)")
    router = start_router()
    start_replica(None, "--api-server", router.url, transport="unix", **ONLY_MINILM)
    _wait_for_embed(router)
    # the router's offers carry the state too: not hot before the model is loaded, hot after
    assert _offer_state(router) == "cold"

    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": SENTENCES}]}
    headers = {"X-Capability-Type": "embed", "X-Capability-Model": "all-MiniLM-L6-v2"}
    answer = httpx.post(f"{router.url}/infer", json=body, headers=headers, timeout=FIRST_CALL_TIMEOUT)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "embedding" and output["datatype"] == "FP32" and output["shape"] == [3, 384]
    check_similarities(np.asarray(output["data"], dtype=np.float32).reshape(3, 384), "router /infer")

    deadline = time.monotonic() + 10
    while _offer_state(router) != "hot":  # a state change re-registers at once; allow for the round trip
        assert time.monotonic() < deadline, f"the router's offer is still {_offer_state(router)!r}"
        time.sleep(0.1)

    # discovery: the router names the replica, the client talks to it directly
    with Client(api_server=router.url, capability=CAPABILITY, timeout=FIRST_CALL_TIMEOUT) as client:
        check_similarities(client.infer("embed", {"text": SENTENCES})["embedding"], "router discovery")


def test_openai_embeddings_through_the_router(start_router, start_replica):
    """``POST /v1/embeddings`` with the official openai SDK: ``model`` selects ``{type: embed, model: ...}``."""
    if not _router_available():
        pytest.skip("`anyserve router` is not available (anyserve-router not installed)")
    openai = pytest.importorskip("openai")
    router = start_router()
    start_replica(None, "--api-server", router.url, transport="unix", **ONLY_MINILM)
    _wait_for_embed(router)
    model = CAPABILITY["model"]
    with openai.OpenAI(
        base_url=f"{router.url}/v1", api_key="anyserve", timeout=FIRST_CALL_TIMEOUT, max_retries=0
    ) as client:
        assert model in [m.id for m in client.models.list()]

        # The SDK asks for base64 unless told otherwise, and decodes it to floats.
        answer = client.embeddings.create(model=model, input=SENTENCES)
        assert answer.model == model and answer.object == "list"
        assert [d.index for d in answer.data] == [0, 1, 2]
        assert all(len(d.embedding) == 384 for d in answer.data)
        check_similarities([d.embedding for d in answer.data], "openai sdk")
        # Counted by the model's tokenizer, not in words: [CLS] and [SEP] around every sentence at least.
        words = sum(len(s.split()) for s in SENTENCES)
        assert answer.usage.prompt_tokens >= words + 2 * len(SENTENCES), answer.usage
        assert answer.usage.total_tokens == answer.usage.prompt_tokens

        # encoding_format="float" gives the same vectors, and one string is one row.
        one = client.embeddings.create(model=model, input=SENTENCES[1], encoding_format="float")
        assert len(one.data) == 1
        np.testing.assert_allclose(one.data[0].embedding, answer.data[1].embedding, atol=1e-5)

        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="no-such-embedder", input="hi")
