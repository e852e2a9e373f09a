"""examples/step1 runs exactly as its README says: ``python demo_step1.py``, and cleans up after itself.

The demo starts a router and two replicas itself (free ports, a temporary
store), checks every step of the step-1 scenario, and stops every
process group it started, on success and on Ctrl-C alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

from processes import EXAMPLE_ENV, ROOT, group_pids, run_example_script, start_process

EXAMPLE = ROOT / "examples" / "step1"
STARTED = re.compile(r"\((router|node-a|node-b), pid (\d+)\)")


def _started_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in STARTED.findall(output)}


def _kill_leftovers(pids: dict[str, int]) -> None:
    """Safety net: whatever the demo failed to stop must not outlive the test."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _normalise(command: str) -> str:
    command = re.sub(r"--port \d+", "--port P", command)
    command = re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:P", command)
    return re.sub(r"file://\S+", "file://STORE", command)


def test_readme_names_the_command_this_test_runs():
    readme = (EXAMPLE / "README.md").read_text()
    assert "```bash\npython demo_step1.py\n```" in readme


def test_the_demo_runs_the_step1_scenario_and_cleans_up():
    result = run_example_script(EXAMPLE, "demo_step1.py")
    pids = _started_pids(result.stdout)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert set(pids) == {"router", "node-a", "node-b"}
        # 1. local hit, 2. delegation through the router, 3. object by reference
        assert "[local-hit] served by node-a in " in out
        assert "[delegation] served by node-b, delegated_from=node-a, in " in out
        assert re.search(r"\[object-ref\] node B answered with a reference: fs://\w+ \(4,194,304 bytes", out)
        assert re.search(r"\[object-ref\] client read \S+: 4,194,304 bytes, sha256 matches", out)
        # 4. the switching cost is paid exactly when the model changes
        switches = re.findall(r"\[switch\] (\S+) +([\d.]+)s +load ([\d.]+)s +\((model changed|same model)\)", out)
        assert [model for model, *_ in switches] == ["llama-70b", "llama-70b", "qwen-72b", "qwen-72b", "llama-70b"]
        for _, seconds, load, why in switches:
            if why == "model changed":
                assert float(load) >= 0.9 and float(seconds) >= 0.9
            else:
                assert float(load) == 0.0 and float(seconds) < 0.5
        assert "step 1 demo passed" in out
        # everything it started is gone, and so is its temporary directory
        assert "[cleanup] stopped node-b, node-a, router" in out
        assert {name: group_pids(pid) for name, pid in pids.items()} == {name: [] for name in pids}
        workdir = re.search(r"\[cleanup\] removed (\S+)", out)
        assert workdir is not None and not Path(workdir.group(1)).exists()
        # the README's by-hand commands are the ones the demo runs
        ran = [_normalise(line.split("$ ", 1)[1].split("   (")[0]) for line in out.splitlines() if "] $ " in line]
        readme = (EXAMPLE / "README.md").read_text().splitlines()
        by_hand = [_normalise(line) for line in readme if line.startswith(("anyserve router ", "anyserve start "))]
        assert ran == by_hand
    finally:
        _kill_leftovers(pids)


def test_ctrl_c_stops_every_process_the_demo_started():
    # A long load keeps the demo busy in step 2 (a gRPC call in flight) when Ctrl-C arrives.
    env = {**os.environ, **EXAMPLE_ENV}
    demo = start_process([sys.executable, "demo_step1.py", "--load-seconds", "20"], cwd=EXAMPLE, env=env)
    proc = demo.proc
    pids: dict[str, int] = {}
    try:
        demo.wait_for("2. delegation", timeout=30)
        pids = _started_pids(demo.output(settle=0.5))
        assert set(pids) == {"router", "node-a", "node-b"}
        began = time.monotonic()
        demo.signal(signal.SIGINT)  # what Ctrl-C in its terminal does: the nodes run in their own sessions
        proc.wait(timeout=20)
        took = time.monotonic() - began
        out = demo.output()
        assert proc.returncode == 130, out
        assert took < 6, f"the demo took {took:.1f}s to stop after Ctrl-C"
        assert "interrupted" in out and "[cleanup] stopped node-b, node-a, router" in out
        assert {name: group_pids(pid) for name, pid in pids.items()} == {name: [] for name in pids}
    finally:
        demo.kill_group()
        _kill_leftovers(pids)
