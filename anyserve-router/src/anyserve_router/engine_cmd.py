"""``anyserve engine add|list|remove``: front an existing OpenAI-compatible engine server from a running router.

The commands call the router's ``/engines`` API (see
:mod:`anyserve_router.engines_api`); ``[[router.engines]]`` in the
configuration does the same when the router starts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from anyserve.config import load_settings
from anyserve.credentials import Credentials, bearer

engine_app = typer.Typer(
    help="Front existing OpenAI-compatible engine servers (vLLM, SGLang, TGI, Ollama, llama.cpp) as capabilities.",
    no_args_is_help=True,
)

RouterOption = Annotated[
    str, typer.Option("--router", help="The router's URL.", envvar="ANYSERVE_ROUTER_URL", show_default=True)
]
DEFAULT_ROUTER = "http://127.0.0.1:8080"


def parse_capability(text: str) -> dict[str, Any]:
    """``type=chat,model=X`` -> ``{"type": "chat", "model": "X"}`` (numbers and true/false typed)."""
    attrs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"{item!r} is not KEY=VALUE (e.g. type=chat,model=llama-8b)", param_hint="--capability"
            )
        attrs[key.strip()] = _typed(value.strip())
    if not attrs:
        raise typer.BadParameter("empty capability; e.g. type=chat,model=llama-8b", param_hint="--capability")
    return attrs


def _typed(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _call(method: str, url: str, **kwargs: Any) -> Any:
    """One request to the router's /engines, with the admin token (configured, or the state directory's)."""
    try:
        headers = bearer(Credentials.load(load_settings()).admin)
        response = httpx.request(method, url, timeout=30, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the router at {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        typer.echo(f"error: the router answered {response.status_code}: {message}", err=True)
        raise typer.Exit(1)
    return response.json()


@engine_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="The engine's base URL, e.g. http://127.0.0.1:8000.")],
    capability: Annotated[
        list[str] | None,
        typer.Option(
            "--capability",
            "-c",
            help="A capability it serves, e.g. type=chat,model=llama-8b (repeatable). "
            "Default: chat and completion for each model its /v1/models lists.",
        ),
    ] = None,
    engine_id: Annotated[
        str | None, typer.Option("--id", help="Its id in the registry (default: from the URL).")
    ] = None,
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Front an engine server: the router probes it, discovers its models and routes OpenAI requests to it."""
    body: dict[str, Any] = {"url": url}
    if capability:
        body["capabilities"] = [parse_capability(c) for c in capability]
    if engine_id:
        body["id"] = engine_id
    state = _call("POST", f"{router.rstrip('/')}/engines", json=body)
    health = "up" if state["healthy"] else f"not answering ({state['error']}); probed again every few seconds"
    typer.echo(f"engine {state['id']} at {state['url']}: {health}")
    if state["models"]:
        typer.echo(f"  models: {', '.join(state['models'])}")


@engine_app.command("list")
def listing(
    router: RouterOption = DEFAULT_ROUTER,
    as_json: Annotated[bool, typer.Option("--json", help="Print the router's answer as JSON.")] = False,
) -> None:
    """The engine servers the router fronts, whether they answer, and their models."""
    engines = _call("GET", f"{router.rstrip('/')}/engines")["engines"]
    if as_json:
        typer.echo(json.dumps(engines, indent=2))
        return
    if not engines:
        typer.echo("no engines (add one with: anyserve engine add URL)")
    for state in engines:
        health = "up" if state["healthy"] else f"down: {state['error']}"
        typer.echo(f"{state['id']}  {state['url']}  {health}  models: {', '.join(state['models']) or '-'}")


@engine_app.command("remove")
def remove(
    engine_id: Annotated[str, typer.Argument(help="The engine's id (see anyserve engine list).")],
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Stop fronting an engine server (requests already sent to it finish)."""
    _call("DELETE", f"{router.rstrip('/')}/engines/{engine_id}")
    typer.echo(f"removed {engine_id}")
