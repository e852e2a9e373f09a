"""``anyserve console``: the address of the router's web console, with the admin token in its fragment.

The token rides after ``#``, which a browser never sends to the server, so
it reaches neither the router nor its access log; the page moves it into
the tab's ``sessionStorage`` and clears it from the address bar. The token
is the one ``anyserve engine`` uses: configured, or the state directory's.
"""

from __future__ import annotations

import webbrowser
from typing import Annotated
from urllib.parse import quote

import typer

from anyserve.config import Settings, load_settings
from anyserve.credentials import Credentials
from anyserve.errors import ConfigError

PATH = "/console"


def router_url(settings: Settings) -> str:
    """``[router] url`` ($ANYSERVE_ROUTER_URL), else where ``anyserve router`` listens by default."""
    if settings.router.url:
        return settings.router.url.rstrip("/")
    host = settings.router.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.router.port}"


def console_url(router: str, admin_token: str | None) -> str:
    url = router.rstrip("/") + PATH
    return f"{url}#token={quote(admin_token, safe='')}" if admin_token else url


def console(
    router: Annotated[
        str | None,
        typer.Option("--router", help="The router's URL (default: router.url, else http://127.0.0.1:8080)."),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the console in a web browser too.")] = False,
) -> None:
    """Print the web console's URL, carrying the admin token (keep it to yourself); --open opens it."""
    try:
        settings = load_settings()
        token = Credentials.load(settings).admin
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    url = console_url(router or router_url(settings), token)
    typer.echo(url)
    if token:
        typer.echo("(the part after # is the admin token: it never reaches the server, but do not share the link)",
                   err=True)  # fmt: skip
    if open_browser and not webbrowser.open(url):
        typer.echo("error: no web browser could be started here; open the URL above yourself", err=True)
        raise typer.Exit(1)
