"""Each distribution installs into a fresh virtual environment with only what it
declares (plus pytest) and passes its own tests there, without its siblings."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# name -> (distributions to install, test folders to run, import smoke check)
GROUPS: dict[str, tuple[list[str], list[str], str]] = {
    "core+objects-fs": (
        ["anyserve-core", "anyserve-objects-fs"],
        ["anyserve-core/tests", "anyserve-objects-fs/tests"],
        # the documented way to serve without anyserve-cli explains itself here too
        "import anyserve, anyserve_objects_fs, subprocess, sys; "
        "subprocess.run([sys.executable, '-m', 'anyserve', '--help'], check=True, capture_output=True)",
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
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


@dataclass
class Outcome:
    install: subprocess.CompletedProcess[str]
    unexpected: set[str] = field(default_factory=set)
    smoke: subprocess.CompletedProcess[str] | None = None
    tests: subprocess.CompletedProcess[str] | None = None


def build_wheels(wheelhouse: Path) -> dict[str, Path]:
    """Every distribution built once, one after the other.

    Building the same source tree from several pip processes at once races on
    its ``build/`` and ``*.egg-info`` folders, so the venvs install these wheels.
    """
    dists = sorted({d for group in GROUPS.values() for d in group[0]})
    built = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheelhouse),
                 *(str(ROOT / d) for d in dists)])  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = {}
    for dist in dists:
        stem = Path(dist).name.replace("-", "_")
        (wheel,) = wheelhouse.glob(f"{stem}-*.whl")
        wheels[dist] = wheel
    return wheels


def build_and_test(group: str, where: Path, wheels: dict[str, Path]) -> Outcome:
    """A fresh venv with only the group's distributions (plus pytest), its import smoke check and its tests."""
    dists, test_dirs, smoke = GROUPS[group]
    env_dir = where / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    outcome = Outcome(run([python, "-m", "pip", "install", "--quiet", *(str(wheels[d]) for d in dists), "pytest"]))
    if outcome.install.returncode != 0:
        return outcome
    installed = run([python, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    outcome.unexpected = {d for d in ALL_DISTRIBUTIONS if d.lower() in names} - {Path(d).name for d in dists}
    outcome.smoke = run([python, "-c", smoke])
    outcome.tests = run(
        [python, "-m", "pytest", "-q", "-m", "not slow and not model", "-p", "no:cacheprovider", *test_dirs], cwd=ROOT
    )
    return outcome


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every group built side by side: most of the time is pip and interpreter start-up, not CPU."""
    wheels = build_wheels(tmp_path_factory.mktemp("wheelhouse"))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = {g: pool.submit(build_and_test, g, tmp_path_factory.mktemp(g), wheels) for g in GROUPS}
        return {g: f.result() for g, f in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_distribution_installs_and_passes_alone(group: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[group]
    assert outcome.install.returncode == 0, outcome.install.stdout + outcome.install.stderr
    assert not outcome.unexpected, f"{group} pulled in siblings it does not declare: {outcome.unexpected}"
    assert outcome.smoke is not None and outcome.smoke.returncode == 0, outcome.smoke
    assert outcome.tests is not None
    assert outcome.tests.returncode == 0, outcome.tests.stdout[-4000:] + outcome.tests.stderr[-2000:]
    assert " passed" in outcome.tests.stdout
