import pytest

from anyserve import Capability


def test_matches_is_the_subset_rule():
    cap = Capability(type="chat", model="llama-70b")
    assert cap.matches({"type": "chat"})
    assert cap.matches({"type": "chat", "model": "llama-70b"})
    assert cap.matches({})
    assert not cap.matches({"type": "chat", "model": "llama-8b"})
    assert not cap.matches({"type": "chat", "gpus": "2"})


def test_values_compare_normalised_so_headers_match_typed_values():
    cap = Capability(type="heavy", gpus=2, quantized=True)
    assert cap.matches({"gpus": "2", "quantized": "true"})
    assert cap.matches({"GPUS": 2})
    assert not cap.matches({"gpus": "3"})


def test_mapping_api_and_copies():
    cap = Capability({"type": "embed"}, model="minilm")
    assert cap["type"] == "embed" and cap.get("model") == "minilm" and cap.get("x") is None
    data = cap.to_dict()
    data["type"] = "changed"
    assert cap["type"] == "embed"
    assert Capability.from_dict(cap.to_dict()) == cap
    assert dict(cap) == {"type": "embed", "model": "minilm"}


def test_hashable_and_equal_by_normalised_value():
    assert Capability(gpus=2) == Capability(gpus="2")
    assert len({Capability(type="a"), Capability(type="a"), Capability(type="b")}) == 2
    assert Capability(type="a") == {"type": "a"}


def test_repr_is_readable():
    assert repr(Capability(type="chat", model="llama-70b")) == "Capability(type='chat', model='llama-70b')"


def test_immutable():
    cap = Capability(type="chat")
    with pytest.raises(TypeError):
        cap["type"] = "x"  # type: ignore[index]
