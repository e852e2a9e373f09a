"""The object API a handler uses: references in inputs and parameters, and pickle only on request."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
from processes import ROOT

from anyserve import Context, ModelInferRequest, ObjRef
from anyserve.builtins.memory import MemoryStore
from anyserve.client import build_request
from anyserve.errors import InvalidRequest
from anyserve.objects import (
    PICKLE_CONTENT_TYPE,
    decode_ref_parameters,
    dumps_pickle,
    encode_ref_parameters,
    loads_pickle,
)

# -- references in requests ------------------------------------------------------


def test_objref_metadata_does_not_change_identity():
    a = ObjRef("fs", "k", size=3, created=1.0)
    assert a == ObjRef("fs", "k", size=3, created=2.0)
    assert ObjRef.from_dict(a.to_dict()) == a and ObjRef.from_dict(a.to_dict()).created == 1.0
    assert str(a) == "fs://k"


def test_ref_parameters_round_trip_under_their_own_name():
    ref = ObjRef("fs", "stage1/out.bin", size=10)
    wire = encode_ref_parameters({"source": ref, "mode": "fast", "anyserve.objref": ref})
    assert wire == {"anyserve.objref.source": "fs://stage1/out.bin", "mode": "fast", "anyserve.objref": str(ref)}
    back = decode_ref_parameters(wire)
    assert back == {
        "source": ObjRef("fs", "stage1/out.bin"),
        "mode": "fast",
        "anyserve.objref": ObjRef("fs", "stage1/out.bin"),
    }


@pytest.mark.parametrize(
    "params",
    [
        {"anyserve.objref.x": "no-scheme"},
        {"anyserve.objref.x": 3},
        {"x": 1, "anyserve.objref.x": "fs://k"},
    ],
)
def test_bad_ref_parameters_are_invalid_requests(params):
    with pytest.raises(InvalidRequest):
        decode_ref_parameters(params)


def test_a_ref_under_a_plain_and_a_prefixed_name_is_refused_on_encode():
    with pytest.raises(InvalidRequest):
        encode_ref_parameters({"x": ObjRef("fs", "a"), "anyserve.objref.x": ObjRef("fs", "b")})


def test_context_decodes_refs_from_inputs_and_parameters():
    ref = ObjRef("fs", "blob")
    request = build_request("digest", {"data": ref, "text": "hi", "many": [ref, ref]})
    request.parameters["anyserve.objref.side"].string_param = "fs://side"
    context = Context()
    inputs = context.inputs(request)
    assert inputs["data"] == [ref] and inputs["text"] == ["hi"] and inputs["many"] == [ref, ref]
    assert context.parameters(request) == {"side": ObjRef("fs", "side")}
    assert context.ref(request, "data") == ref
    assert context.ref(request, "side") == ObjRef("fs", "side")
    with pytest.raises(InvalidRequest, match="not a single object reference"):
        context.ref(request, "text")
    with pytest.raises(InvalidRequest, match="no object reference named 'nothing'"):
        context.ref(request, "nothing")


def test_the_shared_memory_shape_decodes_to_a_ref():
    request = ModelInferRequest(model_name="digest")
    tensor = request.inputs.add(name="data", datatype="BYTES", shape=[1])
    tensor.parameters["anyserve.objref"].string_param = "fs://big"
    assert Context().ref(request) == ObjRef("fs", "big")


def test_context_call_sends_ref_parameters_in_wire_form():
    seen = {}

    def caller(**kwargs):
        seen.update(kwargs)
        return "answer"

    context = Context(caller=caller)
    ref = ObjRef("fs", "k")
    assert context.call({"type": "x"}, {"data": ref}, parameters={"source": ref, "n": 1}) == "answer"
    assert seen["parameters"] == {"anyserve.objref.source": "fs://k", "n": 1}
    # and the request the caller builds carries them as plain string parameters
    request = build_request("x", seen["inputs"], parameters=seen["parameters"])
    assert Context().parameters(request) == {"source": ref, "n": 1}


def test_a_missing_object_names_the_reference():
    store = MemoryStore()
    context = Context(objects=lambda: store)
    with pytest.raises(Exception) as info:
        context.objects.get(ObjRef("mem", "gone"))
    assert info.value.code == "NOT_FOUND" and "mem://gone" in str(info.value)


# -- pickle, only when the caller opts in ------------------------------------------


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('code ran while unpickling')",))


def test_pickle_round_trips_only_when_trusted():
    store = MemoryStore()
    ref = store.create(dumps_pickle({"a": [1, 2]}), content_type=PICKLE_CONTENT_TYPE)
    data = store.get(ref)
    with pytest.raises(InvalidRequest) as info:
        loads_pickle(data)
    assert "trusted=True" in info.value.message and "runs code" in info.value.message
    assert info.value.code == "INVALID_ARGUMENT"
    for not_quite in (1, "yes", [True], None, False):
        with pytest.raises(InvalidRequest):
            loads_pickle(data, trusted=not_quite)  # type: ignore[arg-type]
    assert loads_pickle(data, trusted=True) == {"a": [1, 2]}


def test_an_untrusted_malicious_pickle_never_runs():
    data = pickle.dumps(Boom())
    with pytest.raises(InvalidRequest):
        loads_pickle(data)  # SystemExit would escape pytest.raises if the payload ran


def _unpickling_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                isinstance(owner, ast.Name)
                and owner.id in {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
                and node.func.attr in {"load", "loads", "Unpickler", "open"}
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"eval", "exec"}:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}")
    return found


def test_nothing_in_anyserve_unpickles_implicitly():
    """The only unpickling call in every shipped package is loads_pickle's, behind trusted=True."""
    sources = [
        p
        for pattern in ("anyserve-*/src/**/*.py", "plugins/*/src/**/*.py")
        for p in ROOT.glob(pattern)
        if "_pb2" not in p.name
    ]
    assert sources
    calls = [c for p in sources for c in _unpickling_calls(p)]
    assert calls == [f"anyserve-core/src/anyserve/objects.py:{_loads_line()}"], calls


def _loads_line() -> int:
    text = (ROOT / "anyserve-core/src/anyserve/objects.py").read_text().splitlines()
    return next(i for i, line in enumerate(text, 1) if "pickle.loads(" in line and "return" in line)


def test_a_handler_that_does_not_opt_in_refuses_stored_pickles(start_replica, tmp_path):
    from anyserve import Client, InferenceError
    from anyserve_objects_fs import FileStore

    root = tmp_path / "objects"
    ref = FileStore(root).create(pickle.dumps(Boom()), content_type=PICKLE_CONTENT_TYPE)
    replica = start_replica("objects_apps:store", "--object-store", str(root))
    with Client(replica.endpoint, timeout=30) as client, pytest.raises(InferenceError) as info:
        client.infer("unpickle", {"ref": ref})
    assert info.value.code == "INVALID_ARGUMENT"
    assert "refusing to unpickle" in info.value.message
    with Client(replica.endpoint, timeout=30) as client:  # and keeps serving: the bytes are just bytes
        assert client.infer("read", {"ref": ref})["length"] == [len(pickle.dumps(Boom()))]
