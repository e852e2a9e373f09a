"""Reading a ``/metrics`` answer in tests: samples by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(v for n, ls, v in samples(text) if n == name and all(ls.get(k) == x for k, x in labels.items()))


def label_values(text: str, name: str, label: str) -> set[str]:
    return {ls[label] for n, ls, _ in samples(text) if n == name and label in ls}


def families(text: str) -> set[str]:
    """Every metric the text declares (``# TYPE`` lines), series or not."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
