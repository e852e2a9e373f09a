"""examples/basic runs exactly as its README says, and prints what the README shows."""

from __future__ import annotations

import re

import pytest
from processes import EXAMPLE_ENV, ROOT, free_port, run_anyserve, run_example_script

from anyserve import Client, InferenceError

EXAMPLE = ROOT / "examples" / "basic"


def _readme() -> str:
    return (EXAMPLE / "README.md").read_text()


def test_readme_names_the_commands_this_test_runs() -> None:
    readme = _readme()
    assert "anyserve start --app app:app --port 50051" in readme
    assert "python client.py" in readme


def test_the_client_prints_every_handlers_answer() -> None:
    port = free_port()  # the README's 50051 may be taken on a test machine; --port is the only change
    replica = run_anyserve("start", "--app", "app:app", "--port", str(port), cwd=EXAMPLE, env=EXAMPLE_ENV)
    try:
        replica.wait_for(f" ready at 127.0.0.1:{port}", timeout=30)
        result = run_example_script(EXAMPLE, "client.py", "--endpoint", f"127.0.0.1:{port}", timeout=30)
        # A bad request is a clear error, as the README says.
        with Client(f"127.0.0.1:{port}", timeout=10) as client, pytest.raises(InferenceError) as info:
            client.infer("add", {"a": [1, 2], "b": [1, 2, 3]})
    finally:
        replica.kill_group()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "echo: output_text = ['hello', 'anyserve']" in lines
    assert "echo: output_numbers = [1.5, 2.5]" in lines
    assert "add: [1, 2, 3] + [10, 20, 30] = [11, 22, 33]" in lines
    assert "classifier: 'I love this, the service is great' -> positive (0.75)" in lines
    assert "classifier: 'This is terrible and slow, I hate it' -> negative (0.8)" in lines
    # The README's sample output is the real output.
    shown = re.search(r"It prints:\n\n```text\n(.*?)```", _readme(), re.S)
    assert shown is not None and shown.group(1).splitlines() == lines
    assert info.value.code == "INVALID_ARGUMENT"
    assert "same length" in info.value.message
