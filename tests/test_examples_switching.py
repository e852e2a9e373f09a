"""examples/switching runs as its README says, and only model changes pay the load cost."""

from __future__ import annotations

import subprocess
import sys

from processes import ROOT, free_port, run_anyserve, run_example_script

EXAMPLE = ROOT / "examples" / "switching"


def test_switching_example_pays_only_for_model_changes():
    port = free_port()
    process = run_anyserve(
        "start", "--app", "app:app", "--transport", "unix", "--resources", "gpus=1", "--port", str(port),
        cwd=EXAMPLE, env={"LOAD_SECONDS": "0.8", "TOKEN_DELAY": "0.001"},
    )  # fmt: skip
    try:
        process.wait_for(" ready at ")
        out = run_example_script(EXAMPLE, "client.py", f"127.0.0.1:{port}", timeout=120)
        assert out.returncode == 0, out.stderr
        rows = [line.split() for line in out.stdout.splitlines()]
        costs = [
            (row[0], float(row[1].rstrip("s")), "switch" in line)
            for row, line in zip(rows, out.stdout.splitlines(), strict=True)
        ]
        switches = [seconds for _, seconds, switched in costs if switched]
        same = [seconds for _, seconds, switched in costs if not switched]
        assert len(switches) == 3 and len(same) == 3
        assert min(switches) >= 0.8  # the load cost
        assert max(same) < 0.5  # nothing to load
        status = subprocess.run(
            [sys.executable, "-m", "anyserve_cli", "status", f"127.0.0.1:{port}", "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0
        assert '"action": "stop"' in status.stdout  # the evictions are recorded as switches
    finally:
        process.kill_group()
