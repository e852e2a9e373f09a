"""Tables for ``anyserve plugins list``.

Kept apart from the command so the data (:mod:`anyserve_cli.inventory`) and
its JSON form stay free of presentation. Every value is wrapped in
:class:`rich.text.Text`: plugin names, reasons and config errors contain
``[brackets]`` that rich would otherwise read as markup and swallow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyserve_cli.inventory import PluginReport

_LABELS = {
    "transports": "transport",
    "object_backends": "object backend",
    "stream_encodings": "encoding",
    "matchers": "matcher",
    "routing_stages": "routing",
    "commands": "command",
    "capabilities": "capability",
}
_STATUS_STYLE = {"ok": "green", "builtin": "dim", "error": "bold red", "disabled": "yellow"}


def _one_line(text: str) -> str:
    """pluggy's validation messages span lines; a listing row must not."""
    return " ".join(text.split())


def _describe(key: str, item: Any) -> str:
    if key == "object_backends":
        return f"{item['name']} ({', '.join(f'{s}://' for s in item['schemes'])})"
    if key == "routing_stages":
        return f"{item['kind']} {item['name']}"
    if key == "capabilities":
        attrs = ", ".join(f"{k}={v}" for k, v in item.items() if k != "stream")
        return attrs + (" [stream]" if item.get("stream") else "")
    return str(item)


def contribution_lines(report: PluginReport) -> list[str]:
    """``"transport: inproc"``-style lines, one per contributed name."""
    return [f"{_LABELS[key]}: {_describe(key, item)}" for key, items in report.contributes.items() for item in items]


def render_plugins(console: Console, reports: Sequence[PluginReport], *, hidden: int) -> None:
    """The plugins table, then every failure with its reason, unwrapped."""
    table = Table(title="plugins", title_justify="left")
    for column in ("plugin", "distribution", "version", "status", "hooks", "contributes"):
        table.add_column(column, overflow="fold")
    for report in reports:
        status = "builtin" if report.builtin and report.status == "ok" else report.status
        table.add_row(
            Text(report.name),
            Text(report.distribution),
            Text(report.version),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            # "register_" is implied for most hooks; the JSON keeps the full names.
            Text("\n".join(h.removeprefix("register_") for h in report.hooks)),
            Text("\n".join(contribution_lines(report)) or "-"),
        )
    if reports:
        console.print(table)
    else:
        console.print("no plugins installed besides core's built-ins")
    if hidden:
        console.print(Text(f"({hidden} built-in plugins hidden; --all shows them)", style="dim"))
    problems = [r for r in reports if r.reason]
    if problems:
        console.print()
        console.print(Text("problems:", style="bold"))
        for report in problems:
            line = Text(f"  {report.name} ({report.distribution} {report.version}) {report.status}: ")
            line.append(_one_line(report.reason or ""))
            console.print(line, soft_wrap=True)


def _resolution(entry: Mapping[str, Any]) -> Text:
    if entry.get("error"):
        return Text("error (below)", style="bold red")
    if entry.get("selected") is None:
        return Text("-")
    plugin = entry.get("plugin")
    return Text(f"{entry['selected']} (plugin {plugin})" if plugin else str(entry["selected"]))


def render_selected(console: Console, selected: Mapping[str, Mapping[str, Any]]) -> None:
    """What each setting resolves to and where its value came from; errors in full below.

    Errors go under the table, unwrapped: they list the installed names and
    the install hint, which a narrow table cell would shred.
    """
    table = Table(title="selected by configuration", title_justify="left")
    for column in ("setting", "value", "source", "selected"):
        table.add_column(column, overflow="fold")
    errors: list[str] = []
    for category, entry in selected.items():
        if "order" in entry:  # decision hook: no setting, the first answer wins
            order = ", ".join(entry["order"]) or "none"
            table.add_row(Text(f"{category} (hook)"), Text("-"), Text(f"first answer of: {order}"), _resolution(entry))
            continue
        value = entry.get("value")
        setting = str(entry.get("setting") or category)
        table.add_row(
            Text(setting),
            Text("(not set)" if value is None else str(value)),
            Text(str(entry.get("source", "default"))),
            _resolution(entry) if "selected" in entry else Text("-"),
        )
        if entry.get("error"):
            errors.append(f"  {setting}: {_one_line(entry['error'])}")
    console.print()
    console.print(table)
    if errors:
        console.print(Text("errors:", style="bold"))
        for line in errors:
            console.print(Text(line), soft_wrap=True)
