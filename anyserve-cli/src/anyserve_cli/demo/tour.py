"""The scenarios ``anyserve demo`` walks through, each printed as it happens."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from anyserve import Client

Say = Callable[[str], None]


def _json_body(text: str) -> dict[str, object]:
    """A KServe v2 JSON body with one text: ``text_input``, the LLM convention's prompt (one user message)."""
    return {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [text]}]}


def routing(router: str, say: Say) -> None:
    for headers in (
        {"X-Capability-Type": "chat", "X-Capability-Model": "demo-small"},
        {"X-Capability-Type": "heavy", "X-Capability-Model": "llama-70b"},
    ):
        shown = ", ".join(f"{k}: {v}" for k, v in headers.items())
        began = time.perf_counter()
        answer = httpx.post(f"{router}/infer", json=_json_body("hello router"), headers=headers, timeout=60)
        answer.raise_for_status()
        say(f"  POST /infer [{shown}] -> served by {answer.headers['X-Served-By']} "
            f"in {time.perf_counter() - began:.2f}s: {answer.json()['outputs'][0]['data'][0]}")  # fmt: skip
    missing = httpx.post(
        f"{router}/infer", json=_json_body("x"), headers={"X-Capability-Type": "translate"}, timeout=30
    )
    say(f"  X-Capability-Type: translate -> HTTP {missing.status_code}: {missing.json()['error'][:110]}...")


def delegation(chat_endpoint: str, say: Say) -> None:
    say(f"asking the chat replica ({chat_endpoint}) directly for a capability it lacks: type=heavy")
    with Client(chat_endpoint, timeout=60) as client:
        began = time.perf_counter()
        result = client.infer("heavy", {"prompt": "summarise the quarter"},
                              capability={"type": "heavy", "model": "llama-70b"})  # fmt: skip
    say(f"  delegated by {result.parameters.get('anyserve.delegated_from')} through the router to the heavy "
        f"replica ({time.perf_counter() - began:.2f}s): {result['text_output'][0]}")  # fmt: skip


def objects(router: str, say: Say) -> None:
    say("type=pipeline: the chat replica stores 8 MiB once and calls type=embed with only its reference")
    answer = httpx.post(f"{router}/infer", json=_json_body("go"), headers={"X-Capability-Type": "pipeline"}, timeout=60)
    answer.raise_for_status()
    outputs = {o["name"]: o["data"][0] for o in answer.json()["outputs"]}
    say(f"  reference passed: {outputs['reference']}")
    say(f"  embed replica: {outputs['text_output']}")
    say(f"  checksum matches: {outputs['sha256'][:12] in outputs['text_output']}")


def streaming(router: str, say: Say, write: Callable[[str], None]) -> None:
    say("POST /infer/stream (Server-Sent Events), tokens printed as they arrive:")
    headers = {"X-Capability-Type": "chat", "X-Capability-Model": "demo-small"}
    write("  ")
    began = time.perf_counter()
    first: float | None = None
    body = _json_body("stream it")
    with httpx.stream("POST", f"{router}/infer/stream", json=body, headers=headers, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for output in event.get("outputs", []):
                if output["name"] == "text_output":
                    first = first or time.perf_counter() - began
                    write(str(output["data"][0]))
    write("\n")
    say(f"  first token after {1000 * (first or 0):.0f} ms, whole answer {time.perf_counter() - began:.2f}s")


def openai_sdk(router: str, say: Say, write: Callable[[str], None]) -> None:
    """The router's OpenAI-compatible API through the official ``openai`` SDK: ``model`` selects the capability."""
    from openai import OpenAI  # imported here: only this step needs it, and it takes a moment

    say(f'OpenAI(base_url="{router}/v1"): model="demo-small" routes to {{type: chat, model: demo-small}}')
    messages = [{"role": "user", "content": "what does the router do?"}]
    with OpenAI(base_url=f"{router}/v1", api_key="anyserve", timeout=60, max_retries=0) as client:
        say(f"  client.models.list() -> {[model.id for model in client.models.list()]}")
        say("  client.chat.completions.create(model='demo-small', messages=..., stream=True):")
        write("  ")
        finish, usage = None, None
        stream = client.chat.completions.create(
            model="demo-small", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            for choice in chunk.choices:
                write(choice.delta.content or "")
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
        write("\n")
        tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens" if usage else "no usage"
        say(f"  finish_reason={finish}, usage: {tokens}")
        short = client.chat.completions.create(model="demo-small", messages=messages, max_tokens=4)
        choice = short.choices[0]
        say(f"  the same with max_tokens=4, unary: {choice.message.content!r} (finish_reason={choice.finish_reason})")


#: What the real model is asked in the OpenAI step (greedy, so its answer is the same every run).
REAL_QUESTION = "What does a router do? Answer in one sentence."


def openai_real(router: str, model: str, endpoint: str, say: Say, write: Callable[[str], None]) -> None:
    """A real chat model (the llama.cpp engine plugin) through the router's OpenAI API, with the ``openai`` SDK.

    ``endpoint`` is the replica serving it, whose status says what loading the model cost.
    """
    from openai import OpenAI  # imported here: only this step needs it, and it takes a moment

    from anyserve.status_client import replica_status

    say(f'OpenAI(base_url="{router}/v1"): model="{model}" routes to {{type: chat, model: {model}}}, '
        "SmolLM2-135M-Instruct on llama.cpp")  # fmt: skip
    messages = [{"role": "user", "content": REAL_QUESTION}]
    with OpenAI(base_url=f"{router}/v1", api_key="anyserve", timeout=120, max_retries=0) as client:
        say(f"  client.models.list() -> {sorted(m.id for m in client.models.list())}")
        began = time.perf_counter()
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        first_call = time.perf_counter() - began
        started = [s for s in replica_status(endpoint)["switches"] if s["action"] == "start"]
        load = f": worker class {started[-1]['worker']} started in {started[-1]['seconds']:.2f}s" if started else ""
        say(f"  first request: {first_call:.2f}s (the model loads on first use{load})")
        say(f"  user: {REAL_QUESTION}")
        say(f"  client.chat.completions.create(model='{model}', messages=..., stream=True, temperature=0):")
        write("  ")
        finish, usage, first = None, None, None
        began = time.perf_counter()
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True},
            temperature=0, max_tokens=64,
        )  # fmt: skip
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    first = first or time.perf_counter() - began
                    write(choice.delta.content.replace("\n", "\n  "))
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
        total = time.perf_counter() - began
        write("\n")
        tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens" if usage else "no usage"
        say(f"  finish_reason={finish}, usage: {tokens}")
        if first is not None and usage is not None and usage.completion_tokens > 1 and total > first:
            rate = (usage.completion_tokens - 1) / (total - first)  # tokens after the first, over their time
            say(f"  first token after {first * 1000:.0f} ms, then {rate:.0f} tokens/s ({total:.2f}s in all)")
        short = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0)
        choice = short.choices[0]
        say(f"  the same with max_tokens=4, unary: {choice.message.content!r} (finish_reason={choice.finish_reason})")


def switching(heavy_endpoint: str, say: Say, anyserve: str = "anyserve") -> None:
    """``anyserve`` is how to run the command from another terminal (see ``cluster.anyserve_command``)."""
    say("the heavy replica has one gpu; llama-70b (already hot) and mixtral-8x22b each need it:")
    with Client(heavy_endpoint, timeout=60) as client:
        previous = "llama-70b"
        for model in ("llama-70b", "mixtral-8x22b", "mixtral-8x22b", "llama-70b"):
            began = time.perf_counter()
            client.infer("heavy", {"prompt": "hi"}, capability={"type": "heavy", "model": model})
            note = "switch" if model != previous else "same model"
            say(f"  {model:<14} {time.perf_counter() - began:6.2f}s  ({note})")
            previous = model
    say(f"  only requests that change the served model pay the load; see `{anyserve} status` for each switch")
