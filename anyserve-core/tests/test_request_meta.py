"""RequestMeta: read once at each edge (HTTP headers, gRPC metadata, frame maps), carried unchanged."""

from __future__ import annotations

import time

import pytest

from anyserve.errors import InvalidRequest
from anyserve.protocol import RequestMeta, query_from_request
from anyserve.protocol import messages as pb


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in values.items()]


def test_http_headers_give_a_normalised_query_and_every_field():
    meta = RequestMeta.from_http(
        headers(
            X_Capability_Type=" chat ",
            X_Capability_Model_Family="mini",
            X_Delegated_From="r1",
            X_Delegation_Depth="1",
            X_Request_Id="req-7",
            X_Request_Timeout="2.5",
            traceparent="00-abc-def-01",
            content_type="application/json",
        )
    )
    assert meta.query == {"type": "chat", "model_family": "mini"}
    assert (meta.delegated_from, meta.depth, meta.request_id, meta.traceparent) == ("r1", 1, "req-7", "00-abc-def-01")
    assert meta.deadline is not None and 2.0 < meta.timeout() <= 2.5


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"X_Capability_Ty pe": "chat"}, "does not name a capability key"),
        ({"X_Capability_Type": ""}, "is empty"),
        ({"X_Delegation_Depth": "1"}, "needs X-Delegated-From"),
        ({"X_Delegated_From": "a", "X_Delegation_Depth": "zero"}, "must be a positive integer"),
        ({"X_Request_Timeout": "-1"}, "positive number of seconds"),
        ({"X_Request_Id": "x" * 300}, "longer than 256"),
    ],
)
def test_http_headers_a_client_got_wrong_are_refused_by_name(bad: dict[str, str], fragment: str):
    with pytest.raises(InvalidRequest, match=fragment):
        RequestMeta.from_http(headers(**bad))


def test_non_ascii_and_conflicting_capability_headers_are_refused():
    with pytest.raises(InvalidRequest, match="must be ASCII"):
        RequestMeta.from_http([(b"x-capability-type", "chät".encode())])
    with pytest.raises(InvalidRequest, match="given twice with different values"):
        RequestMeta.from_http([(b"x-capability-type", b"a"), (b"x-capability-type", b"b")])


def test_metadata_pairs_carry_everything_across_a_hop_unchanged():
    sent = RequestMeta(
        query={"type": "chat", "model_family": "mini"},
        delegated_from="r1",
        depth=1,
        deadline=time.monotonic() + 5,
        request_id="req-7",
        traceparent="00-abc-def-01",
        tracestate="k=v",
    )
    pairs = sent.to_metadata(handler=3)
    assert ("x-capability-model-family", "mini") in pairs and ("x-anyserve-handler", "3") in pairs
    got = RequestMeta.from_metadata(pairs)
    assert got.query == sent.query and got.handler == 3
    assert (got.delegated_from, got.depth, got.request_id) == ("r1", 1, "req-7")
    assert (got.traceparent, got.tracestate) == ("00-abc-def-01", "k=v")
    assert got.deadline is not None and 4.0 < got.timeout() <= 5.0
    # gRPC's own deadline wins over the pair
    assert RequestMeta.from_metadata(pairs, timeout=1.0).timeout() <= 1.0


def test_a_request_id_is_made_up_only_when_missing():
    assert RequestMeta(request_id="mine").with_request_id().request_id == "mine"
    made = RequestMeta().with_request_id().request_id
    assert len(made) >= 20 and made != RequestMeta().with_request_id().request_id


def test_the_query_a_plain_kserve_request_names():
    request = pb.ModelInferRequest(model_name="chat", model_version="big")
    assert query_from_request(request.model_name, request.model_version, request.parameters) == {
        "type": "chat",
        "model": "big",
    }
    request.parameters["capability.gpus"].int64_param = 2
    request.parameters["capability.quantized"].bool_param = True
    assert query_from_request(request.model_name, request.model_version, request.parameters) == {
        "gpus": "2",
        "quantized": "true",
    }


def test_unreadable_metadata_between_hops_is_read_conservatively_not_refused():
    garbled = RequestMeta.from_metadata([("x-delegated-from", "r1"), ("x-delegation-depth", "many")])
    assert (garbled.delegated_from, garbled.depth) == ("r1", 1)  # delegated once: never again
    assert RequestMeta.from_metadata([("x-delegation-depth", "2")]).depth == 0  # no origin, no delegation
    assert RequestMeta.from_metadata([("x-request-timeout", "soon")]).deadline is None


def test_the_openai_sdks_read_timeout_is_the_deadline_unless_x_request_timeout_says_otherwise():
    sdk = RequestMeta.from_http(headers(x_stainless_read_timeout="600.0"))
    assert sdk.deadline is not None and 599.0 < sdk.timeout() <= 600.0
    ours = RequestMeta.from_http(headers(x_stainless_read_timeout="600", x_request_timeout="2"))
    assert ours.timeout() <= 2.0
    assert RequestMeta.from_http(headers(x_stainless_read_timeout="never")).deadline is None  # not ours to refuse


def test_a_deadline_that_passed_on_the_way_stays_a_deadline():
    """Between hops ``0.000`` left is a deadline now, not the absence of one."""
    assert RequestMeta.from_metadata([("x-request-timeout", "0.000")]).timeout() == 0.0
    with pytest.raises(InvalidRequest):
        RequestMeta.from_http(headers(x_request_timeout="0"))  # a client asking for no time at all is a mistake


def test_the_deadline_sent_on_is_the_one_given_when_the_meta_has_none():
    meta = RequestMeta(query={"type": "echo"})
    pairs = dict(meta.to_metadata(deadline=time.monotonic() + 3))
    assert 2.0 < float(pairs["x-request-timeout"]) <= 3.0
    assert "x-request-timeout" not in dict(meta.to_metadata())
