"""``anyserve plugins``: which plugins are installed and what configuration picks.

The first thing to run when a name "is not installed" or a plugin misbehaves:
it shows every plugin with its distribution, version, status, hooks and
contributed names, every plugin that failed with the reason, and what each
category resolves to under the given configuration and flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError
from anyserve.plugins import get_plugin_manager
from anyserve_cli.inventory import build_inventory, collect_capabilities
from anyserve_cli.plugin_commands import CliState
from anyserve_cli.plugins_render import render_plugins, render_selected

plugins_app = typer.Typer(
    name="plugins",
    help="Inspect installed plugins and what the configuration selects from them.",
    no_args_is_help=True,
)


def _fail(exc: ConfigError) -> typer.Exit:
    """Print a configuration problem as one line on stderr; exit status 2 means "fix your input"."""
    typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
    return typer.Exit(2)


@plugins_app.command("list")
def list_plugins(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Include core's built-in plugins.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Configuration file (default: $ANYSERVE_CONFIG, ./anyserve.toml, ./pyproject.toml)."
        ),
    ] = None,
    transport: Annotated[str | None, typer.Option(help="Override transport.name.")] = None,
    object_store: Annotated[str | None, typer.Option(help="Override objects.url.")] = None,
    stream_encoding: Annotated[str | None, typer.Option(help="Override encoding.name.")] = None,
    matcher: Annotated[str | None, typer.Option(help="Override matcher.name.")] = None,
    router_url: Annotated[str | None, typer.Option(help="Override router.url.")] = None,
) -> None:
    """List plugins: distribution, version, status, hooks, contributed names, and what is selected.

    Exits 0 even when plugins failed (they are listed with the reason); 2 when
    the configuration itself is invalid.
    """
    state = ctx.find_object(CliState) or CliState(get_plugin_manager())
    overrides = {
        "transport.name": transport,
        "objects.url": object_store,
        "encoding.name": stream_encoding,
        "matcher.name": matcher,
        "router.url": router_url,
    }
    try:
        settings = load_settings(config, overrides=overrides)
        catalog = Catalog(state.pm)  # raises when two plugins register one name
    except ConfigError as exc:
        raise _fail(exc) from None
    capabilities = collect_capabilities(state.pm)
    reports = build_inventory(state.pm, catalog, state.commands, capabilities)
    selected = catalog.selected(settings)
    shown = [r for r in reports if show_all or not r.builtin]

    if as_json:
        document = {"plugins": [r.to_json() for r in shown], "selected": selected}
        typer.echo(json.dumps(document, indent=2, default=str))
        return
    console = Console(highlight=False)
    render_plugins(console, shown, hidden=len(reports) - len(shown))
    render_selected(console, selected)
