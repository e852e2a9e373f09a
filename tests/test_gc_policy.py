"""ANYSERVE_GC in the real processes: a replica's worker serves with start-up frozen, and a bad value stops a start.

The policy itself is pinned in anyserve-core/tests/test_gc_policy.py; here
it is what the commands do with it.
"""

from __future__ import annotations

import pytest
from kserve import Wire
from processes import run_anyserve

from anyserve.protocol import messages as pb
from anyserve.tensors import decode_outputs


@pytest.mark.parametrize(("policy", "young"), [("tuned", 10_000), ("default", 700)])
def test_a_worker_serves_under_the_policy(start_replica, policy: str, young: int) -> None:
    replica = start_replica("gc_app:app", ANYSERVE_GC=policy)
    wire = Wire(replica.endpoint)
    try:
        answer = wire.infer(pb.ModelInferRequest(model_name="gc"), {"type": "gc"})
    finally:
        wire.close()
    outputs = decode_outputs(answer)
    assert outputs["young"] == [young]
    assert (outputs["frozen"][0] > 0) == (policy == "tuned")


@pytest.mark.parametrize("command", [("router", "--port", "0"), ("start", "--app", "gc_app:app", "--port", "0")])
def test_a_bad_policy_stops_the_command_with_one_error_line(command: tuple[str, ...]) -> None:
    process = run_anyserve(*command, env={"ANYSERVE_GC": "off"})
    try:
        assert process.proc.wait(timeout=60) == 2
    finally:
        process.kill_group()
    assert "ANYSERVE_GC='off' is not one of tuned, default" in process.output()
