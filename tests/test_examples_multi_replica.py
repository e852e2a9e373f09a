"""examples/multi_replica runs exactly as its README says: one router, two replicas, one client.

The only change is free ports instead of the README's fixed ones.
"""

from __future__ import annotations

import re

from processes import EXAMPLE_ENV, ROOT, Process, free_port, run_anyserve, run_example_script

EXAMPLE = ROOT / "examples" / "multi_replica"
README_PORTS = ("8080", "50051", "50052")


def _readme_commands() -> list[str]:
    readme = (EXAMPLE / "README.md").read_text()
    return [line for line in readme.splitlines() if line.startswith(("anyserve ", "python client.py"))]


def test_readme_names_the_commands_this_test_runs():
    assert _readme_commands() == [
        "anyserve router --port 8080",
        "anyserve start --app chat_app:app --port 50051 --api-server http://127.0.0.1:8080 --replica-id chat-1",
        "anyserve start --app heavy_app:app --port 50052 --api-server http://127.0.0.1:8080 --replica-id heavy-1",
        "python client.py --router http://127.0.0.1:8080",
    ]


def test_the_client_shows_routing_and_delegation():
    ports = {port: str(free_port()) for port in README_PORTS}

    def adapt(command: str) -> list[str]:
        return re.sub(r"\b(8080|5005[12])\b", lambda m: ports[m.group(1)], command).split()

    commands = _readme_commands()
    started: list[Process] = []
    try:
        for command in commands[:3]:  # router first: the replicas register with it
            args = adapt(command)
            assert args[0] == "anyserve"
            started.append(run_anyserve(*args[1:], cwd=EXAMPLE, env=EXAMPLE_ENV))
            started[-1].wait_for(" ready at ", timeout=30)
        client = adapt(commands[3])
        result = run_example_script(EXAMPLE, *client[1:])
    finally:
        for process in started:
            process.kill_group()
    assert result.returncode == 0, result.stderr + result.stdout
    chat, heavy = f"127.0.0.1:{ports['50051']}", f"127.0.0.1:{ports['50052']}"
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f'registry: chat-1 at {chat} offers [{{"type": "chat"}}]',
        f'registry: heavy-1 at {heavy} offers [{{"type": "heavy", "gpus": 2}}]',
        "router: {type=chat} -> X-Served-By: chat-1 -> you said 'hello router'",
        "router: {type=heavy, gpus=2} -> X-Served-By: heavy-1 -> sum of squares of [1, 2, 3] = 14",
    ]
    assert lines[4].startswith("router: {type=heavy, gpus=8} -> HTTP 404: no live replica offers")
    assert lines[5:] == [
        f"delegation: heavy sent to chat-1 at {chat} -> served by heavy-1, delegated_from=chat-1 "
        "-> sum of squares of [1, 2, 3] = 14",
        f"discovery: {{type=heavy}} -> heavy-1 at {heavy} -> sum of squares of [1, 2, 3] = 14",
    ]
