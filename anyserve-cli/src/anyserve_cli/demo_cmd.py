"""``anyserve demo``: start a router and three replicas locally and walk through what anyserve does."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.plugins import get_plugin_manager
from anyserve_cli.demo import real_model, tour
from anyserve_cli.demo.cluster import ClusterError, LocalCluster, activate_hint, anyserve_command

APPS = "anyserve_cli.demo.apps"
NEEDS = {"transport": ("unix", "anyserve-transport-unix"), "encoding": ("sse", "anyserve-encoding-sse")}


def _check_installed() -> None:
    """Everything the demo uses, or one clear line saying what to install."""
    catalog = Catalog(get_plugin_manager())
    missing = [dist for key, (name, dist) in NEEDS.items() if name not in catalog.registries[key].records]
    if "file" not in catalog.scheme_owners():
        missing.append("anyserve-objects-fs")
    if "router" not in get_plugin_manager().impl_names("anyserve_register_commands"):
        missing.append("anyserve-router")
    if missing:
        typer.echo(f"error: the demo needs {', '.join(missing)}: pip install {' '.join(missing)}", err=True)
        raise typer.Exit(2)


def demo(
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the cluster up afterwards and print commands to try.")
    ] = False,
    load_seconds: Annotated[float, typer.Option(help="Simulated model load (switching) cost.")] = 1.0,
    simulated: Annotated[
        bool,
        typer.Option("--simulated", help="Use the simulated chat model even where the real one is installed."),
    ] = False,
) -> None:
    """Start a router and three replicas on free loopback ports and walk through routing by capability,
    delegation, objects passed by reference, streaming, the OpenAI-compatible API and worker switching.

    With the llama.cpp engine plugin installed, a fourth replica serves the real SmolLM2-135M chat model
    and the OpenAI step calls it; otherwise the simulated demo-small answers there."""
    _check_installed()
    load_settings()  # a broken anyserve.toml in the current folder is reported before anything starts
    real, why_not = real_model.find(get_plugin_manager(), simulated)
    step = 0

    def say(text: str) -> None:
        typer.echo(text)

    def title(text: str) -> None:
        nonlocal step
        step += 1
        typer.echo(typer.style(f"\n[{step}] {text}", bold=True))

    def write(text: str) -> None:
        typer.echo(text, nl=False)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="anyserve-demo-") as tmp:
        workdir = Path(tmp)
        store = f"file://{workdir / 'objects'}"
        env = {"ANYSERVE_DEMO_LOAD_SECONDS": str(load_seconds)}
        with LocalCluster(workdir, env=env) as cluster:
            try:
                count = "four" if real else "three"
                title(f"starting a router and {count} replicas (unix transport, file object store)")
                router = cluster.start_router()
                say(f"  router   {router}")
                common = ("--api-server", router, "--transport", "unix", "--object-store", store)
                endpoints = {}
                for name, extra in (("chat", ()), ("embed", ()), ("heavy", ("--resources", "gpus=1"))):
                    endpoints[name] = cluster.start_replica(name, f"{APPS}:{name}", *common, *extra)
                    say(f"  {name:<8} {endpoints[name]}")
                if real:
                    # No --app: the replica serves what the installed engine plugin contributes, and only that.
                    endpoints["llm"] = cluster.start_replica("llm", None, *common, env=real.env)
                    say(f"  {'llm':<8} {endpoints['llm']}  ({real.name} on llama.cpp: the engine plugin, no --app)")
                _wait_registered(router, len(endpoints))
                title("routing by capability")
                tour.routing(router, say)
                title("delegation: a replica hands back what it cannot serve (one hop at most)")
                tour.delegation(endpoints["chat"], say)
                title("objects passed between replicas by reference")
                tour.objects(router, say)
                title("a chat answer streamed token by token")
                tour.streaming(router, say, write)
                if real:
                    title("a real chat model through the router's OpenAI API, with the official openai SDK")
                    tour.openai_real(router, real.name, endpoints["llm"], say, write)
                else:
                    title("the same chat model through the router's OpenAI API, with the official openai SDK")
                    say(f"  {why_not}")
                    tour.openai_sdk(router, say, write)
                title("switching the model a replica serves")
                tour.switching(endpoints["heavy"], say, anyserve_command())
                if keep_running:
                    _print_try_it(router, endpoints, real.name if real else None)
                    while True:
                        time.sleep(3600)
                else:
                    typer.echo(typer.style("\ndone; stopping the cluster", bold=True))
            except ClusterError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo("\nstopping the cluster")


def _wait_registered(router: str, count: int, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while len(httpx.get(f"{router}/registry", timeout=5).json()["replicas"]) < count:
        if time.monotonic() > deadline:
            raise ClusterError(f"only some replicas registered with {router} within {timeout:.0f}s")
        time.sleep(0.1)


def _print_try_it(router: str, endpoints: dict[str, str], real: str | None = None) -> None:
    """Commands to paste into another terminal: they must work there as printed, venv activated or not."""
    body = '{"inputs":[{"name":"text_input","datatype":"BYTES","shape":[1],"data":["hi"]}]}'
    chat = '{"model":"demo-small","messages":[{"role":"user","content":"hi"}],"stream":true}'
    real_chat = f'{{"model":"{real}","messages":[{{"role":"user","content":"Say hi."}}],"max_tokens":32}}'
    anyserve = anyserve_command()
    typer.echo(typer.style("\nthe cluster stays up; try, from any terminal (Ctrl-C here stops everything):", bold=True))
    typer.echo(f"  curl -s {router}/registry")
    typer.echo(f"  curl -s {router}/infer -H 'X-Capability-Type: chat' -H 'X-Capability-Model: demo-small' -d '{body}'")
    typer.echo(f"  curl -sN {router}/infer/stream -H 'X-Capability-Type: chat' -H 'X-Capability-Model: demo-small' "
               f"-d '{body}'")  # fmt: skip
    typer.echo(
        f"  curl -s {router}/infer -H 'X-Capability-Type: heavy' -H 'X-Capability-Model: mixtral-8x22b' -d '{body}'"
    )
    typer.echo(f"  curl -s {router}/v1/models")
    typer.echo(f"  curl -sN {router}/v1/chat/completions -H 'Content-Type: application/json' -d '{chat}'")
    if real is not None:
        typer.echo(f"  curl -s {router}/v1/chat/completions -H 'Content-Type: application/json' -d '{real_chat}'")
    typer.echo(f"  {anyserve} status {router}")
    typer.echo(f"  {anyserve} status {endpoints['heavy']}")
    if real is not None:
        typer.echo(f"  {anyserve} status {endpoints['llm']}")
    if (activate := activate_hint()) is not None:
        typer.echo(f"to type plain `anyserve ...` in a new terminal, run there first: {activate}")
