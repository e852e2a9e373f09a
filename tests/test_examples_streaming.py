"""examples/streaming runs exactly as its README says."""

from __future__ import annotations

from processes import EXAMPLE_ENV, ROOT, free_port, run_anyserve, run_example_script

EXAMPLE = ROOT / "examples" / "streaming"


def test_readme_names_the_commands_this_test_runs() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    assert "anyserve start --app app:app --port 50051" in readme
    assert "python client.py" in readme


def test_the_client_prints_the_streamed_reply() -> None:
    port = free_port()  # the README's 50051 may be taken on a test machine; --port is the only change
    replica = run_anyserve("start", "--app", "app:app", "--port", str(port), cwd=EXAMPLE, env=EXAMPLE_ENV)
    try:
        replica.wait_for(f" ready at 127.0.0.1:{port}")
        result = run_example_script(EXAMPLE, "client.py", "--endpoint", f"127.0.0.1:{port}")
    finally:
        replica.kill_group()
    assert result.returncode == 0, result.stderr
    assert "Hello world!" in result.stdout
