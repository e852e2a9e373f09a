"""``anyserve.Client`` against real replicas: values survive, errors are typed, streams stream."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from processes import Replica, free_port

from anyserve import AnyServeError, Client, InferenceError, InferResult, ObjRef
from anyserve.client import capability_metadata
from anyserve.errors import InvalidRequest

StartReplica = Callable[..., Replica]

# One input per Python type the codec knows, and what the echo gives back.
PYTHON_INPUTS: dict[str, tuple[Any, Any]] = {
    "text": ("héllo ✓", ["héllo ✓"]),
    "blob": (b"\x00\xff", [b"\x00\xff"]),
    "buffer": (bytearray(b"ab"), [b"ab"]),
    "flag": (True, [True]),
    "count": (-(2**63), [-(2**63)]),
    "ratio": (0.1, [0.1]),
    "ref": (ObjRef("fs", "ab/cd"), [ObjRef("fs", "ab/cd")]),
    "matrix": ([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]),
    "words": (["a", "", "b"], ["a", "", "b"]),
    "empty": ([], []),
}


@pytest.fixture
def client(start_replica: StartReplica, transport: str) -> Iterator[Client]:
    replica = start_replica(transport=transport)
    with Client(replica.endpoint, timeout=30) as client:
        yield client


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_every_python_type_round_trips_through_a_replica(client: Client, raw: bool) -> None:
    result = client.infer("echo", {name: value for name, (value, _) in PYTHON_INPUTS.items()}, raw=raw)
    assert isinstance(result, InferResult)
    for name, (_, expected) in PYTHON_INPUTS.items():
        got = result[f"output_{name}"]
        assert got == expected, name
        assert [type(v) for v in got] == [type(v) for v in expected], name  # str stays str, bytes stays bytes
    assert result.model_name == "echo"
    assert isinstance(result["pid"][0], int)


def test_numpy_arrays_round_trip_through_a_replica(client: Client) -> None:
    np = pytest.importorskip("numpy")
    arrays = {
        "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "i32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
        "f32": np.linspace(0, 1, 4, dtype=np.float32),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "b": np.array([True, False]),
        "s": np.array(["x", "yé"]),
    }
    for batch in (arrays, {**arrays, "f16": np.array([0.5, 65504], dtype=np.float16)}):  # FP16 sends all raw
        result = client.infer("echo", batch, as_numpy=True)
        for name, array in batch.items():
            got = result[f"output_{name}"]
            assert got.shape == array.shape, name
            assert got.dtype == (object if array.dtype.kind == "U" else array.dtype), name
            assert got.tolist() == array.tolist(), name


def test_add_adds_int64_vectors(client: Client) -> None:
    assert client.infer("add", {"a": [1, 2, 3], "b": [10, 20, 30]})["sum"] == [11, 22, 33]


def test_request_id_and_result_mapping(client: Client) -> None:
    result = client.infer("echo", {"x": 1}, request_id="req-7")
    assert result.id == "req-7" and result.response.id == "req-7"
    assert set(result) == {"output_x", "pid"} and len(result) == 2
    assert dict(result)["output_x"] == [1]
    with pytest.raises(KeyError, match="outputs"):
        result["nope"]


def test_capability_metadata_routes_the_request(client: Client) -> None:
    result = client.infer("ignored", {"x": "hi"}, capability={"type": "chat", "region": "eu"})
    assert result.parameters == {"served_by": "chat-eu"}
    assert result["output_x"] == ["hi"]

    with pytest.raises(InferenceError) as info:
        client.infer("ignored", {"x": "hi"}, capability={"type": "chat", "region": "us"})
    error = info.value
    assert (error.code, error.status) == ("NOT_FOUND", grpc.StatusCode.NOT_FOUND)
    assert "{'type': 'chat', 'region': 'us'}" in error.message
    assert str(error).startswith("NOT_FOUND: ")
    assert isinstance(error, AnyServeError)


def test_default_capability_of_the_client(start_replica: StartReplica) -> None:
    replica = start_replica()
    with Client(replica.endpoint, capability={"type": "add"}) as client:
        assert client.infer("whatever", {"a": [1], "b": [2]})["sum"] == [3]
        # a per-call capability replaces the default
        assert client.infer("x", {"v": 5}, capability={"type": "echo"})["output_v"] == [5]


def test_handler_exception_is_internal_with_its_type(client: Client) -> None:
    with pytest.raises(InferenceError) as info:
        client.infer("boom", {"x": 1})
    assert info.value.code == "INTERNAL" and info.value.status is grpc.StatusCode.INTERNAL
    assert "ValueError" in info.value.message and "failed on purpose" in info.value.message


def test_stream_text_gives_the_tokens(client: Client) -> None:
    assert list(client.stream_text("chat", {"text_input": "hi"})) == ["Hello", " ", "world", "!"]


def test_stream_yields_decoded_responses_without_the_final_marker(client: Client) -> None:
    results = list(client.stream("chat"))
    assert [r["text_output"] for r in results] == [[b"Hello"], [b" "], [b"world"], [b"!"]]
    assert [r.get("finish_reason") for r in results] == [None, None, None, [b"stop"]]


def test_stream_error_raises_the_typed_error_after_what_was_sent(client: Client) -> None:
    received = []
    with pytest.raises(InferenceError) as info:
        for token in client.stream_text("broken-stream"):
            received.append(token)
    assert received == ["partial"]
    assert info.value.code == "INTERNAL" and "RuntimeError" in info.value.message


def test_stream_to_an_unknown_capability_is_not_found(client: Client) -> None:
    with pytest.raises(InferenceError) as info:
        list(client.stream("nope"))
    assert info.value.code == "NOT_FOUND" and "'type': 'nope'" in info.value.message


def test_leaving_a_stream_early_cancels_the_handler(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    tokens = client.stream_text("ticker", parameters={"marker": str(marker)})
    assert [next(tokens) for _ in range(3)] == ["0", "1", "2"]
    tokens.close()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the streaming handler kept running after the client left"
    assert int(marker.read_text()) < 1000


def test_health_and_metadata(client: Client) -> None:
    assert client.is_alive() and client.is_ready()
    assert client.is_model_ready("echo") is True
    assert client.is_model_ready("nope") is False
    assert client.is_model_ready("anything", capability={"type": "chat", "region": "eu"}) is True
    metadata = client.server_metadata()
    assert metadata["name"] == "anyserve" and "model_stream_infer" in metadata["extensions"]


def test_timeout_is_honoured(client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(InferenceError) as info:
        client.infer("slow", {"seconds": 10.0}, timeout=0.5)
    assert info.value.code == "DEADLINE_EXCEEDED" and info.value.status is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "0.5s" in info.value.message
    assert time.monotonic() - started < 5
    assert client.infer("slow", {"seconds": 0.05}, timeout=10)["output_seconds"] == [0.05]


def test_client_default_timeout(start_replica: StartReplica) -> None:
    replica = start_replica()
    with Client(replica.endpoint, timeout=0.3) as client, pytest.raises(InferenceError) as info:
        client.infer("slow", {"seconds": 10.0})
    assert info.value.code == "DEADLINE_EXCEEDED"


def test_oversize_message_names_the_client_limit(start_replica: StartReplica) -> None:
    replica = start_replica()
    with Client(replica.endpoint, max_message_bytes=1024) as client:
        with pytest.raises(InferenceError) as info:
            client.infer("echo", {"x": b"x" * 4096})
        assert info.value.code == "RESOURCE_EXHAUSTED" and "max_message_bytes=1024" in info.value.message
        assert client.infer("echo", {"x": b"x" * 100})["output_x"] == [b"x" * 100]


def test_dead_endpoint_is_unavailable() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with Client(endpoint, timeout=10) as client:
        with pytest.raises(InferenceError) as info:
            client.infer("echo", {"x": 1})
        assert info.value.code == "UNAVAILABLE" and info.value.status is grpc.StatusCode.UNAVAILABLE
        assert endpoint in info.value.message
        with pytest.raises(InferenceError, match="UNAVAILABLE"):
            list(client.stream_text("chat"))
        assert client.is_alive() is False and client.is_ready() is False
        assert client.is_model_ready("echo") is False


# -- no replica needed ----------------------------------------------------------------


def test_capability_metadata_is_normalised() -> None:
    assert capability_metadata({"Model-Family": " llama ", "gpus": 2.0, "quantized": True}) == [
        ("x-capability-model_family", "llama"),
        ("x-capability-gpus", "2"),
        ("x-capability-quantized", "true"),
    ]
    assert capability_metadata(None) == []
    with pytest.raises(InvalidRequest, match="printable ASCII"):
        capability_metadata({"region": "zürich"})
    with pytest.raises(InvalidRequest, match="capability key"):
        capability_metadata({"bad key!": "x"})


def test_bad_inputs_fail_at_the_call_not_on_the_wire() -> None:
    with Client("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="ragged"):
            client.infer("echo", {"x": [[1], [2, 3]]})
        with pytest.raises(ValueError, match="ragged"):
            client.stream("chat", {"x": [[1], [2, 3]]})  # raised before iterating


def test_discovery_mode_says_when_the_router_is_unreachable() -> None:
    with pytest.raises(AnyServeError, match=r"router http://127\.0\.0\.1:1 is unreachable") as info:
        Client(api_server="http://127.0.0.1:1", capability={"type": "chat"})
    assert info.value.code == "UNAVAILABLE"
    with pytest.raises(AnyServeError, match="endpoint"):
        Client()


def test_stream_error_text_parsing_and_pickling() -> None:
    error = InferenceError.from_stream_error("NOT_FOUND: no capability matches {'type': 'x'}")
    assert (error.code, error.message) == ("NOT_FOUND", "no capability matches {'type': 'x'}")
    free_text = InferenceError.from_stream_error("model failed: out of memory")
    assert (free_text.code, free_text.message, free_text.status) == (
        "UNKNOWN",
        "model failed: out of memory",
        grpc.StatusCode.UNKNOWN,
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InferenceError and (copy.code, copy.message) == (error.code, error.message)
