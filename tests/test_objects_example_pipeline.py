"""examples/pipeline runs exactly as its README says: one router, three replicas, one client call.

The only changes are free ports instead of the README's fixed ones and a
temporary store directory instead of /tmp/anyserve-pipeline.
"""

from __future__ import annotations

import json
import re

from processes import EXAMPLE_ENV, ROOT, Process, free_port, run_anyserve, run_example_script
from router_http import wait_registered

EXAMPLE = ROOT / "examples" / "pipeline"


def _readme_commands() -> list[str]:
    readme = (EXAMPLE / "README.md").read_text()
    return [line for line in readme.splitlines() if line.startswith(("anyserve ", "python client.py"))]


def test_readme_names_the_commands_this_test_runs():
    commands = _readme_commands()
    assert commands[0] == "anyserve router --port 8080"
    for stage, port in (("ingest", 50061), ("transform", 50062), ("summarize", 50063)):
        assert (
            f"anyserve start --app stages:{stage} --port {port} --api-server http://127.0.0.1:8080 "
            f"--object-store file:///tmp/anyserve-pipeline --replica-id {stage}"
        ) in commands
    assert "python client.py --router http://127.0.0.1:8080 README.md" in commands


def test_the_pipeline_summarises_a_document_passed_by_reference(tmp_path):
    store = tmp_path / "store"
    ports = {"8080": str(free_port()), "50061": str(free_port()), "50062": str(free_port()), "50063": str(free_port())}

    def adapt(command: str) -> list[str]:
        command = command.replace("file:///tmp/anyserve-pipeline", f"file://{store}")
        command = re.sub(r"\b(8080|5006[123])\b", lambda m: ports[m.group(1)], command)
        return command.split()

    commands = _readme_commands()
    started: list[Process] = []
    try:
        for command in commands[:4]:
            args = adapt(command)
            assert args[0] == "anyserve"
            started.append(run_anyserve(*args[1:], cwd=EXAMPLE, env=EXAMPLE_ENV))
            started[-1].wait_for(" ready at ")
        wait_registered(f"http://127.0.0.1:{ports['8080']}", 3)
        client = adapt(commands[4])
        result = run_example_script(EXAMPLE, *client[1:], timeout=120)
    finally:
        for process in started:
            process.kill_group()
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    text = (EXAMPLE / "README.md").read_text().lower()
    assert summary["words"] == len(re.findall(r"[a-z0-9']+", text))
    assert summary["summarized_by"] == "summarize"
    assert summary["top"][0][0] == "the"
    # every stage removed what it created
    assert [p for p in store.rglob("*") if p.is_file()] == []
