"""Reading the runner's results: one figure of one cell, CPU per operation, ratios.

Used by ``bench/report.py`` and ``bench/report_targets.py`` (scripts' modules, imported from their directory).
"""

from __future__ import annotations

from typing import Any


def value(results: dict[str, Any], system: str, workload: str, cell: str, key: str) -> float | None:
    try:
        return float(results[system][workload][cell][key])
    except (KeyError, TypeError, ValueError):
        return None


def cell_data(results: dict[str, Any], system: str, workload: str, cell: str) -> dict[str, Any]:
    try:
        return results[system][workload][cell]
    except (KeyError, TypeError):
        return {}


def cpu_per_op(results: dict[str, Any], system: str, workload: str, cell: str) -> float | None:
    """CPU µs (all processes of the system, user + sys) per operation in a cell."""
    data = cell_data(results, system, workload, cell)
    per, ops = data.get("server_cpu_s") or {}, data.get("ops_total") or 0
    return sum(per.values()) * 1e6 / ops if per and ops else None


def core_share(results: dict[str, Any], system: str, workload: str, cell: str) -> float | None:
    """The share of core 0 the system under test itself used in a cell (the rest: idle or someone else)."""
    data = cell_data(results, system, workload, cell)
    per, wall = data.get("server_cpu_s") or {}, data.get("wall_s") or 0
    return sum(per.values()) / wall if per and wall else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b
