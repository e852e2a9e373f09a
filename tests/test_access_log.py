"""The router's access log (``router.access_log``): a real router and replica, the entries read off its stderr."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from kserve import Wire
from processes import Process, free_port, run_anyserve

from anyserve.metric_names import capability_label
from anyserve.protocol import messages as pb


def _cluster(kind: str) -> Iterator[tuple[str, Process]]:
    started: list[Process] = []
    try:
        port = free_port()
        router = run_anyserve(
            "router", "--port", str(port), "--grpc-port", str(free_port()), env={"ANYSERVE_ACCESS_LOG": kind}
        )
        started.append(router)
        router.wait_for(" ready at ")
        url = f"http://127.0.0.1:{port}"
        replica = run_anyserve(
            "start", "--app", "llm_app:app", "--port", str(free_port()), "--api-server", url, "--replica-id", "llm-1"
        )
        started.append(replica)
        replica.wait_for(" ready at ")
        deadline = time.monotonic() + 30
        while not httpx.get(f"{url}/registry", timeout=5).json()["replicas"]:
            assert time.monotonic() < deadline, "the replica did not register with the router"
            time.sleep(0.05)
        yield url, router
    finally:
        for process in started:
            process.kill_group()


@pytest.fixture(scope="module")
def json_cluster() -> Iterator[tuple[str, Process]]:
    yield from _cluster("json")


@pytest.fixture(scope="module")
def text_cluster() -> Iterator[tuple[str, Process]]:
    yield from _cluster("text")


def _entries(router: Process, request_id: str) -> list[dict]:
    """The JSON access-log entries naming ``request_id`` (waits for the first)."""
    router.wait_for(f'"request_id":"{request_id}"', timeout=30)
    found = []
    for line in router.output().splitlines():
        if line.startswith("{") and f'"request_id":"{request_id}"' in line:
            found.append(json.loads(line))
    return found


def test_a_200_from_the_openai_front_names_capability_replica_and_tokens(json_cluster):
    url, router = json_cluster
    answer = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hello big world"}]},
        timeout=30,
    )
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    [entry] = _entries(router, answer.headers["x-request-id"])
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/chat/completions"
    assert entry["front"] == "openai"
    assert entry["status"] == 200
    assert entry["replica"] == answer.headers["x-served-by"] == "llm-1"
    assert entry["capability"] == capability_label({"type": "chat", "model": "tiny-chat"}) or (
        "model=tiny-chat" in entry["capability"] and "type=chat" in entry["capability"]
    )
    assert entry["tokens_in"] == usage["prompt_tokens"]
    assert entry["tokens_out"] == usage["completion_tokens"]
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_a_stream_with_usage_logs_its_tokens_once(json_cluster):
    url, router = json_cluster
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json={
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "hello there"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=30,
    ) as answer:
        assert answer.status_code == 200
        body = answer.read().decode()
        request_id = answer.headers["x-request-id"]
    usage = [json.loads(line[6:])["usage"] for line in body.splitlines() if line.startswith("data: {")]
    usage = [u for u in usage if u]
    [entry] = _entries(router, request_id)
    assert entry["status"] == 200
    assert entry["tokens_in"] == usage[-1]["prompt_tokens"]
    assert entry["tokens_out"] == usage[-1]["completion_tokens"]


def test_a_404_has_no_capability_nor_replica(json_cluster):
    url, router = json_cluster
    answer = httpx.post(
        f"{url}/infer", headers={"X-Capability-Type": "translate"}, content=b'{"inputs": []}', timeout=30
    )
    assert answer.status_code == 404
    [entry] = _entries(router, answer.headers["x-request-id"])
    assert entry["status"] == 404
    assert entry["front"] == "kserve"
    assert entry["path"] == "/infer"
    assert entry["capability"] is None
    assert entry["replica"] is None
    assert "tokens_in" not in entry


def test_the_clients_request_id_is_the_entrys(json_cluster):
    url, router = json_cluster
    answer = httpx.get(f"{url}/health", headers={"X-Request-Id": "client-chose-this-17"}, timeout=30)
    assert answer.status_code == 200
    [entry] = _entries(router, "client-chose-this-17")
    assert entry["method"] == "GET"
    assert entry["path"] == "/health"
    assert entry["front"] == "other"
    assert entry["status"] == 200


def test_text_lines_carry_the_same_fields(text_cluster):
    url, router = text_cluster
    answer = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Request-Id": "text-line-1"},
        timeout=30,
    )
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    line = router.wait_for(" text-line-1 ", timeout=30)
    assert re.search(
        r"\S+Z text-line-1 POST /v1/chat/completions 200 [\d.]+ms front=openai capability=\S*model=tiny-chat\S* "
        rf"replica=llm-1 tokens={usage['prompt_tokens']}/{usage['completion_tokens']}$",
        line,
    ), line
    assert sum(" text-line-1 " in each for each in router.output().splitlines()) == 1


def test_off_writes_no_entries(start_router):
    router = start_router()
    httpx.get(f"{router.url}/health", headers={"X-Request-Id": "not-logged-1"}, timeout=30)
    assert "not-logged-1" not in router.process.output(settle=0.5)


def test_a_path_with_an_encoded_newline_cannot_forge_a_text_line(text_cluster):
    url, router = text_cluster
    answer = httpx.get(
        f"{url}/nothing%0A2026-01-01T00:00:00.000Z%20forged%20GET%20/x%20200", headers={"X-Request-Id": "hostile 1"}
    )
    assert answer.status_code == 404
    line = router.wait_for('"hostile 1"', timeout=30)
    assert '"/nothing\\n2026-01-01T00:00:00.000Z forged GET /x 200"' in line
    assert not any(each.startswith("2026-01-01T00:00:00.000Z") for each in router.output().splitlines())


def test_a_path_with_an_encoded_newline_stays_one_json_object(json_cluster):
    url, router = json_cluster
    answer = httpx.get(f"{url}/nothing%0A%7B%22forged%22%3A1%7D", headers={"X-Request-Id": "hostile-2"})
    assert answer.status_code == 404
    [entry] = _entries(router, "hostile-2")
    assert entry["path"] == '/nothing\n{"forged":1}'
    assert not any(line.startswith('{"forged"') for line in router.output().splitlines())


def _grpc_front(router: Process) -> Wire:
    return Wire(re.search(r"KServe v2 gRPC at (127\.0\.0\.1:\d+)", router.output(settle=0)).group(1))


def test_the_grpc_front_logs_each_call_and_each_stream_run(json_cluster):
    """``ModelInfer`` and each run of ``ModelStreamInfer`` are entries of their own, with the call's code."""
    _, router = json_cluster
    request = pb.ModelInferRequest(model_name="chat", id="grpc-1")
    tensor = request.inputs.add(name="messages", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(json.dumps([{"role": "user", "content": "a b c"}]).encode())
    wire = _grpc_front(router)
    try:
        metadata = {"type": "chat", "model": "tiny-chat"}
        wire.stub.ModelInfer(request, metadata=[("x-request-id", "grpc-unary-1"), *_capability(metadata)], timeout=30)
        stream = wire.stub.ModelStreamInfer(
            iter([request]), metadata=[("x-request-id", "grpc-stream-1"), *_capability(metadata)], timeout=30
        )
        assert list(stream)
        with pytest.raises(Exception, match="NOT_FOUND"):
            wire.stub.ModelInfer(request, metadata=[("x-request-id", "grpc-missing-1"), *_capability({"type": "none"})])
    finally:
        wire.close()
    [unary] = _entries(router, "grpc-unary-1")
    assert unary["method"] == "GRPC" and unary["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert (unary["front"], unary["status"], unary["replica"]) == ("grpc", "OK", "llm-1")
    assert "model=tiny-chat" in unary["capability"]
    [run] = _entries(router, "grpc-stream-1")
    assert run["path"] == "/inference.GRPCInferenceService/ModelStreamInfer"
    assert (run["status"], run["replica"]) == ("OK", "llm-1")
    [missing] = _entries(router, "grpc-missing-1")
    assert (missing["status"], missing["capability"], missing["replica"]) == ("NOT_FOUND", None, None)


def _capability(query: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"x-capability-{key}", value) for key, value in query.items()]
