"""``python -m anyserve``: serving with anyserve-core alone, no anyserve-cli.

The replica is started as a user would start it, in a subprocess, against
the end-to-end test app (tests/apps/echo_app.py, which needs only core).
``ANYSERVE_LOAD_PLUGINS`` allows only anyserve-objects-fs, so even in the
development environment the replica sees what a core-plus-objects-fs install
sees; in that install itself (tests/test_isolation.py) nothing else exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from processes import APPS, free_port, start_process

from anyserve import Client

CORE_ONLY = {"ANYSERVE_LOAD_PLUGINS": "anyserve-objects-fs"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYSERVE_")}
    return {**env, **CORE_ONLY, "PYTHONUNBUFFERED": "1"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "anyserve", *args]
    return subprocess.run(cmd, cwd=APPS, env=_env(), capture_output=True, text=True, timeout=60, check=False)


def test_help_explains_itself() -> None:
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    assert "capability-routed serving runtime" in out.stdout
    assert "start" in out.stdout and "anyserve-cli" in out.stdout
    start = _run("start", "--help")
    assert start.returncode == 0, start.stderr
    for flag in ("--app", "--port", "--host", "--workers", "--transport", "--api-server", "--config", "--log-level"):
        assert flag in start.stdout


def test_no_command_shows_the_help_and_fails() -> None:
    out = _run()
    assert out.returncode == 2
    assert "usage: python -m anyserve" in out.stderr


def test_start_serves_the_app_until_sigterm() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "anyserve", "start", "--app", "echo_app:app", "--port", str(port),
           "--transport", "inproc", "--log-level", "info"]  # fmt: skip
    process = start_process(cmd, cwd=APPS, env=_env())
    try:
        ready = process.wait_for(" ready at ")
        assert f"ready at 127.0.0.1:{port} (1 worker(s), transport inproc" in ready, ready
        assert ready.startswith("anyserve replica ") and ready.endswith("Ctrl-C to stop")
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            result = client.infer("echo", {"x": [1, 2, 3]}, capability={"type": "echo"})
        assert result["output_x"] == [1, 2, 3]
        process.signal(signal.SIGTERM)
        assert process.proc.wait(timeout=30) == 0
    finally:
        process.kill_group()


def test_an_app_that_cannot_be_imported_is_one_error_line() -> None:
    out = _run("start", "--app", "no_such_module:app", "--port", str(free_port()))
    assert out.returncode == 2
    assert out.stderr.startswith("error: cannot import app 'no_such_module:app'")
    assert "Traceback" not in out.stderr


def test_flags_reach_the_settings(monkeypatch, tmp_path) -> None:
    """Each flag lands on the setting ``anyserve start`` sets for it (nothing is started)."""
    from anyserve import serve_command

    for var in [v for v in os.environ if v.startswith("ANYSERVE_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    seen = {}

    async def fake_serve(settings, app, *, log_level, announce):
        seen.update(settings=settings, app=app, log_level=log_level)

    monkeypatch.setattr("anyserve.replica.server.serve", fake_serve)
    monkeypatch.setattr(serve_command.logging, "basicConfig", lambda **kwargs: None)  # leave pytest's logging be
    code = serve_command.main(
        ["start", "--app", "m:app", "--host", "0.0.0.0", "--port", "7000", "--workers", "3",
         "--transport", "inproc", "--api-server", "http://r:8080", "--object-store", "mem://x",
         "--replica-id", "r1", "--log-level", "debug"]
    )  # fmt: skip
    assert code == 0
    settings = seen["settings"]
    assert (settings.replica.host, settings.replica.port, settings.replica.workers) == ("0.0.0.0", 7000, 3)
    assert (settings.transport.name, settings.router.url, settings.objects.url) == (
        "inproc",
        "http://r:8080",
        "mem://x",
    )
    assert settings.replica.replica_id == "r1"
    assert (seen["app"], seen["log_level"]) == ("m:app", "DEBUG")
