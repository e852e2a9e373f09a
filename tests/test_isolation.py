"""Each distribution installs into a fresh virtual environment with only what it
declares (plus pytest) and passes its own tests there, without its siblings."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# name -> (distributions to install, test folders to run, import smoke check)
GROUPS: dict[str, tuple[list[str], list[str], str]] = {
    "core+objects-fs": (
        ["anyserve-core", "anyserve-objects-fs"],
        ["anyserve-core/tests", "anyserve-objects-fs/tests"],
        "import anyserve, anyserve_objects_fs",
    ),
    "cli": (["anyserve-core", "anyserve-cli"], ["anyserve-cli/tests"], "import anyserve_cli"),
    "router": (
        ["anyserve-core", "plugins/anyserve-encoding-sse", "anyserve-router"],
        ["anyserve-router/tests"],
        "import anyserve_router",
    ),
    "transport-unix": (
        ["anyserve-core", "plugins/anyserve-transport-unix"],
        ["plugins/anyserve-transport-unix/tests"],
        "import anyserve_transport_unix",
    ),
    "matcher-glob": (
        ["anyserve-core", "plugins/anyserve-matcher-glob"],
        ["plugins/anyserve-matcher-glob/tests"],
        "import anyserve_matcher_glob",
    ),
    "encoding-sse": (
        ["anyserve-core", "plugins/anyserve-encoding-sse"],
        ["plugins/anyserve-encoding-sse/tests"],
        "import anyserve_encoding_sse",
    ),
}

ALL_DISTRIBUTIONS = {"anyserve-core", "anyserve-objects-fs", "anyserve-router", "anyserve-cli"} | {
    p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists()
}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_distribution_installs_and_passes_alone(group: str, tmp_path: Path) -> None:
    dists, test_dirs, smoke = GROUPS[group]
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")

    install = run([python, "-m", "pip", "install", "--quiet", *(str(ROOT / d) for d in dists), "pytest"])
    assert install.returncode == 0, install.stdout + install.stderr

    installed = run([python, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    unexpected = {d for d in ALL_DISTRIBUTIONS if d.lower() in names} - {Path(d).name for d in dists}
    assert not unexpected, f"{group} pulled in siblings it does not declare: {unexpected}"

    assert run([python, "-c", smoke]).returncode == 0

    tests = run(
        [python, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", *test_dirs],
        cwd=ROOT,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout
