"""The ``prefix`` scorer's precise half: what an engine reports it caches, matched against a prompt.

The cached texts are rendered here the way two real chat templates render
a conversation (ChatML, as SmolLM2 and Qwen use, and Llama 3's, with its
date header); nothing here starts a process. tests/test_load_signals.py
checks the same against a real llama-server.
"""

from __future__ import annotations

import random
import time

import pytest

from anyserve.builtins.routing_prefix import STALE_SECONDS, PrefixAffinity, build
from anyserve.candidates import Candidate
from anyserve.capability import Capability
from anyserve.errors import ConfigError
from anyserve.routing import RouteRequest
from anyserve.routing.held import LEAD, MAX_TEXT_CHARS, MAX_TEXTS, PROBE, EngineCache, held_chars, pieces
from anyserve.routing.request import chat_prompt

CHAT = {"type": "chat", "model": "m"}
SYSTEM = "You are a careful assistant for a law firm. Cite the statute for every claim. " * 6
OTHER_SYSTEM = "You answer questions about gardening in short sentences. " * 8
DOCUMENT = "Clause 1. The tenant shall keep the premises in good repair. " * 20


def chatml(messages: list[dict[str, str]], generated: str = "") -> str:
    """What llama-server lists for a slot of a ChatML model: the rendered prompt, then what it generated."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content'].strip()}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n" + generated


def llama3(messages: list[dict[str, str]]) -> str:
    """Llama 3.1's template: a BOS token, and a date header put before the system prompt's content."""
    out = "<|begin_of_text|>"
    for m in messages:
        head = "Cutting Knowledge Date: December 2023\nToday Date: 05 Dec 2026\n\n" if m["role"] == "system" else ""
        out += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{head}{m['content'].strip()}<|eot_id|>"
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def chat(*contents: str) -> list[dict[str, str]]:
    roles = ["system"] + ["user", "assistant"] * len(contents)
    return [{"role": role, "content": content} for role, content in zip(roles[: len(contents)], contents, strict=True)]


def share(messages: list[dict[str, str]], *texts: str) -> float:
    return EngineCache(texts).share(chat_prompt(messages) or "")


def prompt_chars(messages: list[dict[str, str]]) -> int:
    return len(chat_prompt(messages) or "")


@pytest.mark.parametrize("render", [chatml, llama3])
def test_the_conversation_a_slot_holds_is_held_whole(render):
    messages = chat(SYSTEM, "What is a lease?  ")  # the template trims; the router's prompt keeps the spaces
    assert share(messages, render(messages)) == 1.0


def test_the_next_turn_is_held_up_to_the_new_question_with_the_generated_answer():
    first = chat(SYSTEM, "What is a lease?")
    answer = "A lease is a contract granting use of property for a term."
    nxt = chat(SYSTEM, "What is a lease?", answer, "And a licence?")
    held = share(nxt, chatml(first, generated=answer))
    assert held == pytest.approx(prompt_chars(nxt[:3]) / prompt_chars(nxt))


def test_another_users_conversation_behind_the_same_system_prompt_holds_the_system_prompt():
    held = share(chat(SYSTEM, "Where do I file?"), chatml(chat(SYSTEM, "How long is the notice period?")))
    assert held == pytest.approx(prompt_chars(chat(SYSTEM)) / prompt_chars(chat(SYSTEM, "Where do I file?")))


def test_a_message_held_in_part_counts_up_to_where_the_texts_part():
    cached = chatml(chat(SYSTEM, DOCUMENT + "Who repairs the roof?"))
    messages = chat(SYSTEM, DOCUMENT + "Who pays the rates?")
    parts = pieces(chat_prompt(messages) or "")
    held = held_chars(parts, cached)
    assert held == parts[0][0] + len(DOCUMENT + "Who pa"[:4])  # "Who " is common, "repairs"/"pays" part
    assert 0.9 < share(messages, cached) < 1.0


def test_another_system_prompt_holds_nothing_and_the_best_slot_counts():
    messages = chat(SYSTEM, "What is a lease?")
    assert share(messages, chatml(chat(OTHER_SYSTEM, "What is a lease?"))) == 0.0
    assert share(messages, chatml(chat(OTHER_SYSTEM)), chatml(messages), "") == 1.0
    assert EngineCache(()).share(chat_prompt(messages) or "") == 0.0


def test_content_found_too_far_on_is_not_a_prefix():
    # the engine holds the system prompt, then another conversation, then (later) the same question: its cache
    # can serve the system prompt only
    first = "Tell me about leases."
    cached = chatml(chat(SYSTEM, "x" * 600, "y" * 600, first))
    messages = chat(SYSTEM, first)
    assert share(messages, cached) == pytest.approx(prompt_chars(chat(SYSTEM)) / prompt_chars(messages))
    # and a first message that starts past the template's allowed lead is not one either
    assert share(chat(SYSTEM), "z" * (LEAD + 1) + chatml(chat(SYSTEM))) == 0.0


def test_a_completion_prompt_is_one_piece():
    prompt = DOCUMENT + "Summary:"
    assert pieces(prompt) == [(len(prompt), prompt)]
    assert EngineCache(("<s>" + prompt + " The tenant repairs.",)).share(prompt) == 1.0
    assert EngineCache(("<s>" + DOCUMENT + "Questions:",)).share(prompt) == pytest.approx(len(DOCUMENT) / len(prompt))


def test_a_report_is_bounded_and_listed_without_its_text():
    report = EngineCache.bounded(["a" * (MAX_TEXT_CHARS + 10), ""] + ["b"] * (MAX_TEXTS + 10))
    assert len(report.texts) == MAX_TEXTS - 1  # the empty slot is left out of the first MAX_TEXTS
    assert len(report.texts[0]) == MAX_TEXT_CHARS
    listed = report.listed()
    assert listed == {"texts": MAX_TEXTS - 1, "chars": MAX_TEXT_CHARS + MAX_TEXTS - 2, "age_s": listed["age_s"]}


# -- the scorer with reports ------------------------------------------------------------------------------


def engine(id: str, *texts: str, in_flight: int = 0, read_at: float | None = None) -> Candidate:
    report = EngineCache(texts) if read_at is None else EngineCache(texts, read_at)
    return Candidate(id, Capability(type="chat", model="m"), in_flight=in_flight, signals={"prompts": report})


def request(messages: list[dict[str, str]]) -> RouteRequest:
    return RouteRequest(CHAT, prompt=chat_prompt(messages))


def test_an_engine_holding_a_prompt_it_was_never_routed_scores_for_it():
    messages = chat(SYSTEM, "What is a lease?")
    pool = [engine("a", chatml(chat(OTHER_SYSTEM, "hi"))), engine("b", chatml(messages))]
    scores = PrefixAffinity(block_chars=64).score(request(messages), pool)
    assert scores[0] == 0.0 and scores[1] == 1.0


def test_what_an_engine_evicted_no_longer_scores_though_it_was_routed_there():
    scorer = PrefixAffinity(block_chars=64)
    messages = chat(SYSTEM, "What is a lease?")
    scorer.observe(request(messages), Candidate("a", Capability(type="chat", model="m")))  # before a reported
    # a's slots now hold other conversations; b holds this one (another router sent it there)
    pool = [engine("a", chatml(chat(OTHER_SYSTEM, "hi"))), engine("b", chatml(messages))]
    assert scorer.score(request(messages), pool) == [0.0, 1.0]
    # without reports, the learned index still sends it to a
    learned = [Candidate(c.id, c.capability) for c in pool]
    assert scorer.score(request(messages), learned)[0] == 1.0
    assert PrefixAffinity(block_chars=64, precise=False).score(request(messages), pool) == [0.0, 0.0]


def test_a_prompt_sent_since_the_last_report_counts_until_the_report_shows_it():
    scorer = PrefixAffinity(block_chars=64)
    messages = chat(SYSTEM, "What is a lease?")
    pool = [engine("a"), engine("b")]  # both report empty slots
    scorer.observe(request(messages), pool[0])
    scores = scorer.score(request(chat(SYSTEM, "Where do I file?")), pool)
    assert scores[0] > 0.5 and scores[1] == 0.0


def test_a_stale_report_is_not_trusted_and_the_index_decides():
    scorer = PrefixAffinity(block_chars=64)
    messages = chat(SYSTEM, "What is a lease?")
    scorer.observe(request(messages), Candidate("a", Capability(type="chat", model="m")))
    stale = time.monotonic() - STALE_SECONDS - 1
    pool = [engine("a", read_at=stale), engine("b", chatml(messages), read_at=stale)]
    assert scorer.score(request(messages), pool) == [1.0, 0.0]


def test_a_busy_reporting_holder_yields_to_the_others():
    messages = chat(SYSTEM, "What is a lease?")
    pool = [engine("a", chatml(messages), in_flight=6), engine("b"), engine("c")]
    assert PrefixAffinity(block_chars=64).score(request(messages), pool)[0] == 0.0


def test_precise_is_a_switch():
    assert build({"precise": False}).precise is False and build({}).precise is True
    with pytest.raises(ConfigError, match="precise must be true or false"):
        build({"precise": "no"})


def test_a_repetitive_text_is_tried_at_a_bounded_number_of_places():
    body = "a" * 5000 + "b"
    cached = "a" * 5000 + "c"
    parts = [(len(body), body)]
    assert held_chars(parts, cached) == 5000  # held up to where they part, found at the first place tried
    # the whole message starts 100 characters in, but the probe fits each of the first 100 places: 8 are tried
    body = "a" * 40 + "b"
    assert held_chars([(len(body), body)], "a" * 100 + body) == 40


@pytest.mark.parametrize("held", [0, 1, 1023, 1024, 1025, 5000, 9999])
def test_a_long_message_held_in_part_is_measured_exactly(held):
    body = "".join(random.Random(7).choices("abcdefghijklmnopqrstuvwxyz ", k=10_000))
    cached = "<|im_start|>user\n" + body[:held] + "#" + body[held + 1 :]
    assert held_chars([(len(body) + 6, body)], cached) == (held if held >= PROBE else 0)
