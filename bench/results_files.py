"""Where a benchmark's report goes: ``bench/results/<kind>-<date>-<time>-<host>.md`` (+ ``.json``), and ``-latest``.

The dated pair keeps the history a change can be compared with; the
``-latest`` pair is what the README and docs link to.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from processes import HERE, log

RESULTS = HERE / "results"


def tree_label() -> str:
    """The commit measured, as a report names it: ``abc1234``, or ``abc1234 + uncommitted changes`` (bench/ aside)."""
    root = HERE.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"],
        capture_output=True, text=True,
    )  # fmt: skip
    label = head.stdout.strip() or "(no commit)"
    return f"{label} + uncommitted changes" if changed.stdout.strip() else label


def save(kind: str, started: dt.datetime, text: str, data: Any, out: Path | None = None) -> Path:
    """Write ``text`` (markdown) and ``data`` (JSON) twice, dated and as latest; returns the dated report's path."""
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{started.strftime('%Y-%m-%d-%H%M')}-{platform.node()}"
    for name in (stem, f"{kind}-latest"):
        (folder / f"{name}.md").write_text(text + "\n")
        (folder / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    log(f"{kind}: wrote {folder / stem}.md (+ .json) and {folder / f'{kind}-latest.md'}")
    return folder / f"{stem}.md"
