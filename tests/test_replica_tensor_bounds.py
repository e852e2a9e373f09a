"""The shape bomb against a real replica: refused at once over gRPC, and the replica keeps serving.

``[10000000, 0]`` used to keep a worker busy for 18 s and grow it by 700 MB.
The refusal is INVALID_ARGUMENT, whether the worker reads the request (the
query in metadata: the agent only forwards bytes) or the agent does (a plain
KServe request, whose model name is the query); the same worker answers next.
"""

from __future__ import annotations

import grpc
import pytest
from kserve import output, request

from anyserve.protocol import messages as pb


def _bomb() -> pb.ModelInferRequest:
    bomb = pb.ModelInferRequest(model_name="add", id="bomb")
    bomb.inputs.add(name="a", datatype="INT64", shape=[10_000_000, 0])
    bomb.inputs.add(name="b", datatype="INT64", shape=[0])
    return bomb


def test_a_shape_bomb_is_refused_and_the_worker_serves_on(start_replica, wire_for):
    wire = wire_for(start_replica(transport="unix").endpoint)
    pid = output(wire.infer(request("echo")), "pid")
    for capability in ({"type": "add"}, None):  # the worker parses it, then the agent does
        with pytest.raises(grpc.RpcError) as info:
            wire.infer(_bomb(), capability, timeout=10)  # generous: the refusal reads the shape, nothing else
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'a'" in info.value.details() and "10,000,000 empty rows" in info.value.details()
    assert output(wire.infer(request("add", a=[1, 2], b=[10, 20])), "sum") == [11, 22]
    assert output(wire.infer(request("echo")), "pid") == pid  # the same worker: it never had to die
