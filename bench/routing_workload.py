"""Multi-turn chats with shared system prompts, and the closed-loop driver that sends them (bench/routing_bench.py).

Why not guidellm: guidellm 0.8.1 can express both halves of this workload
(``prefix_count``/``prefix_tokens`` for shared system prompts, ``turns`` with
the history replayed), but every request it sends carries the same extra body
fields and headers. A session router needs a key per conversation (the OpenAI
``user`` field, an ``X-Session-Id`` header), so guidellm would leave the
session rows nothing to route by. This driver sends both, per user.

Every text is made once, from a seed, before any system runs; each system then
replays exactly the same users in the same order. Answers are greedy
(``temperature`` 0) and of a fixed length (``ignore_eos``), so a user's
history, which grows by the previous answer each turn, is the same token count
whichever engine wrote it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from llm_systems import MODEL

#: Plain English words; the text only has to tokenize like prose, nobody reads it.
VOCABULARY = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "river engine signal cloud forest paper window ocean silver market garden table letter summer winter station "
    "account record budget invoice shipment contract warranty customer ticket release server network storage"
)
WORDS = VOCABULARY.split()


@dataclass(frozen=True)
class User:
    """One conversation: a system prompt shared with other users, then its own turns."""

    index: int
    #: Sent as the OpenAI ``user`` field and as ``X-Session-Id``.
    name: str
    #: Which of the shared system prompts this user's conversation starts with.
    prompt: int
    turns: tuple[str, ...]
    #: Seconds the user waits after an answer before the next turn (one per turn after the first).
    think: tuple[float, ...]


@dataclass(frozen=True)
class Workload:
    system_prompts: tuple[str, ...]
    #: In the order the driver starts them (a seeded shuffle, the same for every system).
    users: tuple[User, ...]
    max_tokens: int
    #: Engine tokens per system prompt, and per user message (as made; the chat template adds a few).
    prompt_tokens: int
    turn_tokens: int

    def requests(self) -> int:
        return sum(len(u.turns) for u in self.users)


def words(rng: random.Random, count: int) -> str:
    sentences, left = [], count
    while left > 0:
        n = min(left, rng.randint(6, 16))
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        left -= n
    return " ".join(sentences)


def cut_to_tokens(engine: str, text: str, tokens: int) -> str:
    """``text`` cut to exactly ``tokens`` of the engine's tokenizer (its ``/tokenize`` and ``/detokenize``)."""
    with httpx.Client(timeout=30) as client:
        ids = client.post(f"{engine}/tokenize", json={"content": text}).raise_for_status().json()["tokens"]
        if len(ids) < tokens:
            raise ValueError(f"text of {len(ids)} tokens cannot be cut to {tokens}")
        return client.post(f"{engine}/detokenize", json={"tokens": ids[:tokens]}).raise_for_status().json()["content"]


def build(
    engine: str,
    *,
    seed: int,
    prompts: int,
    prompt_tokens: int,
    users: int,
    turns: int,
    turn_tokens: int,
    max_tokens: int,
    think: tuple[float, float],
) -> Workload:
    """The same users for every system: user ``u`` opens with system prompt ``u mod prompts``.

    Each system prompt starts with its own number, so two prompts share no more than the chat template's
    first tokens; texts are sized with the engine's own tokenizer.
    """
    rng = random.Random(seed)
    system = tuple(
        cut_to_tokens(
            engine, f"You are assistant number {p} of the support desk. " + words(rng, prompt_tokens), prompt_tokens
        )
        for p in range(prompts)
    )
    people = []
    for u in range(users):
        texts = tuple(
            cut_to_tokens(engine, f"Question {t + 1} from user {u}: " + words(rng, turn_tokens), turn_tokens)
            for t in range(turns)
        )
        pauses = tuple(round(rng.uniform(*think), 3) for _ in range(turns - 1))
        people.append(User(u, f"user-{u:03d}", u % prompts, texts, pauses))
    order = list(people)
    rng.shuffle(order)
    return Workload(system, tuple(order), max_tokens, prompt_tokens, turn_tokens)


# ------------------------------------------------------------------------------------------ the driver


@dataclass
class Record:
    """One request as the client saw it, with what the engine said about its prompt cache."""

    user: int
    turn: int
    prompt: int
    start: float
    end: float = 0.0
    ttft_ms: float | None = None
    #: Mean time between content chunks after the first.
    itl_ms: float | None = None
    chunks: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    #: llama-server's ``timings``: prompt tokens read from its cache, and those it computed (and how long that took).
    cache_n: int | None = None
    prompt_n: int | None = None
    prompt_ms: float | None = None
    error: str | None = None
    #: Which engine served it (1-based), where its engine's log tells (routing_systems.attribute).
    engine: int | None = None


def body(workload: Workload, user: User, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": messages,
        "max_tokens": workload.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": user.name,
    }


async def send(client: httpx.AsyncClient, url: str, payload: dict[str, Any], session: str, rec: Record) -> str:
    """One streamed chat completion; fills ``rec`` and returns the answer's text (for the next turn's history)."""
    text: list[str] = []
    times: list[float] = []
    headers = {"X-Session-Id": session}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=payload, headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    times.append(time.perf_counter())
                    text.append(content)
            usage = chunk.get("usage")
            if usage:
                rec.completion_tokens = usage.get("completion_tokens")
                rec.prompt_tokens = usage.get("prompt_tokens")
            timings = chunk.get("timings")
            if timings and not chunk.get("choices"):
                rec.cache_n, rec.prompt_n, rec.prompt_ms = (
                    timings.get("cache_n"),
                    timings.get("prompt_n"),
                    timings.get("prompt_ms"),
                )
    rec.chunks = len(times)
    if times:
        rec.ttft_ms = (times[0] - rec.start) * 1000
        if len(times) > 1:
            rec.itl_ms = (times[-1] - times[0]) * 1000 / (len(times) - 1)
    return "".join(text)


async def run(
    workload: Workload,
    target: Callable[[User], str],
    concurrency: int,
    rampup: float,
    deadline: float,
    on_record: Callable[[Record], Awaitable[None] | None] | None = None,
) -> list[Record]:
    """Closed loop: ``concurrency`` users at a time, each through all its turns, then the next user in line.

    The seats start ``rampup / concurrency`` seconds apart: started at once, the first users would all be
    prefilling together on every engine, and users who start together tend to stay in step.

    A user's next turn goes out after the answer to the previous one and its think time; no turn starts
    after ``deadline`` (``time.perf_counter()``), so a slow system ends with fewer requests, not a longer run.
    """
    queue: asyncio.Queue[User] = asyncio.Queue()
    for user in workload.users:
        queue.put_nowait(user)
    records: list[Record] = []
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    timeout = httpx.Timeout(300.0, connect=10.0)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def seat(number: int) -> None:
            await asyncio.sleep(rampup * number / concurrency)
            while not queue.empty() and time.perf_counter() < deadline:
                user = queue.get_nowait()
                messages = [{"role": "system", "content": workload.system_prompts[user.prompt]}]
                for turn, question in enumerate(user.turns):
                    if turn:
                        await asyncio.sleep(user.think[turn - 1])
                    if time.perf_counter() >= deadline:
                        return
                    messages.append({"role": "user", "content": question})
                    rec = Record(user.index, turn, user.prompt, time.perf_counter())
                    try:
                        answer = await send(client, target(user), body(workload, user, messages), user.name, rec)
                    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                        rec.error = f"{type(exc).__name__}: {exc}"[:300]
                        answer = None
                    rec.end = time.perf_counter()
                    records.append(rec)
                    if on_record is not None:
                        maybe = on_record(rec)
                        if maybe is not None:
                            await maybe
                    if answer is None:
                        break  # a conversation whose turn failed has no history to go on with
                    messages.append({"role": "assistant", "content": answer})

        await asyncio.gather(*(seat(i) for i in range(concurrency)))
    return records


def to_json(records: list[Record]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
