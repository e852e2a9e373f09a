"""The generation loop: option mapping and stop handling (pure), then the real model in-process.

SmolLM2-135M-Instruct loads in a fraction of a second, so the model tests
load it once per module. They need the optional engine install
(``plugins/anyserve-engine-llamacpp/install.sh``) and skip without it.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import pytest

from anyserve.client import build_request
from anyserve.errors import InvalidField
from anyserve.llm import ChatRequest, Delta, Message, Sampling
from anyserve.stream import Stream
from anyserve_engine_llamacpp import engine, model

_missing = [m for m in ("llama_cpp", model.DEFAULT_PACKAGE) if importlib.util.find_spec(m) is None]
needs_engine = [
    pytest.mark.model,
    pytest.mark.engine,
    pytest.mark.skipif(
        bool(_missing), reason=f"{', '.join(_missing)} not installed: run plugins/anyserve-engine-llamacpp/install.sh"
    ),
]

# -- pure parts ----------------------------------------------------------------------------


def test_sampling_defaults_are_llama_cpp_python_servers():
    assert engine.sampling_options(Sampling()) == {"temp": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}


def test_sampling_maps_openai_names_and_engine_extras():
    options = engine.sampling_options(
        Sampling(temperature=0, top_p=0.5, max_tokens=3, seed=1),
        {"top_k": 5, "min_p": 0.1, "repeat_penalty": 1.1, "presence_penalty": 0.5, "response_format": {}},
    )
    assert options == {
        "temp": 0.0,
        "top_p": 0.5,
        "top_k": 5,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
    }


@pytest.mark.parametrize(
    ("name", "value"), [("top_k", 2.5), ("top_k", True), ("min_p", "0.1"), ("min_p", float("nan"))]
)
def test_a_wrong_engine_extra_is_a_400_naming_it(name, value):
    with pytest.raises(InvalidField) as caught:
        engine.sampling_options(Sampling(), {name: value})
    assert caught.value.param == name


def test_ignore_eos_is_a_boolean_extra():
    assert engine.ignore_eos({}) is False and engine.ignore_eos(None) is False
    assert engine.ignore_eos({"ignore_eos": True}) is True
    with pytest.raises(InvalidField):
        engine.ignore_eos({"ignore_eos": "yes"})


def test_seeds():
    assert engine.llama_seed(None) == 0xFFFFFFFF  # llama.cpp picks a random one
    assert engine.llama_seed(42) == 42
    assert engine.llama_seed(0xFFFFFFFF) != 0xFFFFFFFF  # a seed never means "random"
    assert 0 <= engine.llama_seed(-7) < 0xFFFFFFFF


def test_stop_strings_are_found_and_their_beginnings_held_back():
    assert engine.find_stop("one two three", ["three", "two"]) == 4
    assert engine.find_stop("one two", ["six"]) is None
    assert engine.held_back("hello wor", ["world"]) == 3
    assert engine.held_back("hello w", ["world", "wx"]) == 1
    assert engine.held_back("hello", ["world"]) == 0
    assert engine.held_back("ab", ["abc", "bcd"]) == 2


def test_template_messages_keep_extra_fields_but_text_content():
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]
    message = Message.from_dict({"role": "user", "content": parts, "name": "ann"})
    assert engine.template_messages([message]) == [{"name": "ann", "role": "user", "content": "hi"}]


# -- the real model ------------------------------------------------------------------------

QUESTION = [Message("user", "Write a short poem about the sea.")]


@pytest.fixture(scope="module")
def smol():
    if _missing:
        pytest.skip(f"{', '.join(_missing)} not installed: run plugins/anyserve-engine-llamacpp/install.sh")
    loaded = engine.Engine.load(model.Settings(n_threads=1))
    yield loaded
    loaded.close()


def run(smol: engine.Engine, messages=QUESTION, **sampling) -> tuple[str, Delta, list]:
    items = list(smol.chat(ChatRequest("smollm2-135m", list(messages), Sampling(**sampling))))
    last = items[-1]
    assert isinstance(last, Delta) and last.finish_reason is not None and last.usage is not None
    assert all(isinstance(i, str) or i.finish_reason is None for i in items[:-1])
    text = "".join(i if isinstance(i, str) else i.text for i in items)
    return text, last, items


@pytest.mark.usefixtures("smol")
class TestTheModel:
    pytestmark = needs_engine

    def test_the_gguf_chat_template_is_applied(self, smol):
        prompt = smol.prompt(QUESTION)
        # SmolLM2's template (ChatML, with its default system message when none is given)
        assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        assert prompt.endswith("<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n")
        assert smol.template == smol.llm.metadata["tokenizer.chat_template"]

    def test_a_configured_chat_template_replaces_the_ggufs(self, smol, tmp_path):
        template = tmp_path / "plain-chatml.jinja"
        template.write_text(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        other = engine.Engine.load(model.Settings(n_threads=1, chat_template=template))
        try:
            prompt = other.prompt(QUESTION)  # no default system turn this time
            assert prompt == "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"
            assert len(other.tokenize_prompt(QUESTION)) < len(smol.tokenize_prompt(QUESTION))
            _, last, _ = run(other, temperature=0, max_tokens=3)
            assert last.usage.prompt_tokens == len(other.tokenize_prompt(QUESTION))
        finally:
            other.close()

    def test_usage_is_counted_by_the_models_tokenizer(self, smol):
        text, last, _ = run(smol, temperature=0, max_tokens=12)
        expected = smol.llm.tokenize(smol.prompt(QUESTION).encode(), add_bos=False, special=True)
        assert last.usage.prompt_tokens == len(expected) > len(smol.prompt(QUESTION).split())
        assert last.usage.completion_tokens == 12 and last.finish_reason == "length"
        # the same counts and text as llama-cpp-python's own create_chat_completion (the GGUF template, greedy)
        reference = smol.llm.create_chat_completion(
            messages=[{"role": "user", "content": QUESTION[0].content}], max_tokens=12, temperature=0
        )
        assert reference["usage"]["prompt_tokens"] == last.usage.prompt_tokens
        assert reference["usage"]["completion_tokens"] == last.usage.completion_tokens
        assert reference["choices"][0]["message"]["content"] == text

    def test_a_natural_end_is_stop_and_counts_the_tokens_generated(self, smol):
        text, last, items = run(smol, messages=[Message("user", "Say hello.")], temperature=0)
        assert last.finish_reason == "stop"
        assert 0 < last.usage.completion_tokens < 100
        # one delta per token (plain ASCII text, no stop strings): the count is the tokens streamed
        assert len([i for i in items if i]) in (last.usage.completion_tokens, last.usage.completion_tokens + 1)
        assert "<|im_end|>" not in text

    def test_ignore_eos_runs_to_max_tokens(self, smol):
        short = [Message("user", "Say hello.")]
        _, natural, _ = run(smol, messages=short, temperature=0, max_tokens=200)
        assert natural.finish_reason == "stop" and natural.usage.completion_tokens < 200
        request = ChatRequest(
            "smollm2-135m", short, Sampling(temperature=0, max_tokens=200), extra={"ignore_eos": True}
        )
        last = list(smol.chat(request))[-1]
        assert last.finish_reason == "length" and last.usage.completion_tokens == 200

    def test_max_tokens_ends_with_length(self, smol):
        _, last, items = run(smol, temperature=0.7, max_tokens=5, seed=1)
        assert last.finish_reason == "length" and last.usage.completion_tokens == 5
        assert len(items) <= 6

    def test_greedy_is_deterministic(self, smol):
        first, _, _ = run(smol, temperature=0, max_tokens=40)
        run(smol, messages=[Message("user", "Something else entirely.")], max_tokens=5)  # a different prompt between
        assert run(smol, temperature=0, max_tokens=40)[0] == first

    def test_a_seed_makes_sampling_reproducible(self, smol):
        first, _, _ = run(smol, temperature=1.0, seed=1234, max_tokens=40)
        run(smol, temperature=1.0, max_tokens=10)  # an unseeded run between does not disturb it
        assert run(smol, temperature=1.0, seed=1234, max_tokens=40)[0] == first
        others = {run(smol, temperature=1.0, seed=seed, max_tokens=40)[0] for seed in (1, 2, 3)}
        assert len(others | {first}) > 1  # and the seed matters

    def test_a_stop_string_ends_the_answer_before_it(self, smol):
        full, _, _ = run(smol, temperature=0, max_tokens=60)
        word = full.split()[3]  # a word a few tokens in
        cut, last, _ = run(smol, temperature=0, max_tokens=60, stop=(word, "never-generated"))
        assert last.finish_reason == "stop"
        assert cut == full[: full.index(word)] and word not in cut
        assert last.usage.completion_tokens < 60

    def test_top_p_and_temperature_reach_the_sampler(self, smol):
        # top_p near 0 keeps only the most likely token: the same answer as greedy, whatever the temperature
        greedy, _, _ = run(smol, temperature=0, max_tokens=20)
        assert run(smol, temperature=1.5, top_p=1e-6, seed=9, max_tokens=20)[0] == greedy

    def test_logprobs(self, smol):
        text, _, items = run(smol, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3)
        entries = [e for i in items if isinstance(i, Delta) for e in (i.logprobs or ())]
        assert len(entries) == 4 and "".join(e["token"] for e in entries) == text
        for entry in entries:
            assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
            # greedy: the chosen token is the most likely one
            assert entry["top_logprobs"][0]["token"] == entry["token"]
            assert entry["top_logprobs"][0]["logprob"] == pytest.approx(entry["logprob"])

    def test_a_prompt_longer_than_the_context_is_a_400(self, smol):
        long = [Message("user", "word " * 3000)]
        with pytest.raises(InvalidField, match="context window 2048"):
            run(smol, messages=long)

    def test_closing_the_generator_stops_llama_cpp_at_once(self, smol):
        answer = smol.chat(ChatRequest("smollm2-135m", QUESTION, Sampling(temperature=0.8, seed=3)))
        for _ in range(5):
            next(answer)
        evaluated = smol.llm.n_tokens
        started = time.perf_counter()
        answer.close()  # what the convention does when the client has gone
        assert time.perf_counter() - started < 0.05
        assert smol.last.cancelled and smol.last.completion_tokens >= 5
        time.sleep(0.1)
        assert smol.llm.n_tokens == evaluated  # no token was evaluated after the close
        # the engine is free at once: the next request starts without waiting
        started = time.perf_counter()
        nxt = smol.chat(ChatRequest("smollm2-135m", QUESTION, Sampling(max_tokens=2)))
        next(nxt)
        assert time.perf_counter() - started < 2
        nxt.close()

    def test_the_worker_class_streams_through_the_convention(self, smol, monkeypatch):
        monkeypatch.setattr(engine.Engine, "load", classmethod(lambda cls, settings: smol))
        worker = engine.LlamaCpp()
        worker.on_start()
        messages = json.dumps([{"role": "user", "content": "Say hello."}])
        request = build_request("chat", {"messages": [messages]}, parameters={"max_tokens": 6, "temperature": 0})
        stream = Stream()

        def produce() -> None:
            try:
                worker.handle_stream(request, None, stream)
            finally:
                stream.close()

        threading.Thread(target=produce).start()
        responses = list(stream)
        # a response per token; the last (the sixth token's text) carries the finish reason and usage
        assert len(responses) == 6
        last = responses[-1].infer_response
        assert last.outputs[-1].contents.bytes_contents == [b"length"]
        assert last.parameters["completion_tokens"].int64_param == 6
        assert last.parameters["prompt_tokens"].int64_param > 6
        unary = worker.handle(request, None)
        text = unary.outputs[0].contents.bytes_contents[0].decode()
        streamed = "".join(
            r.infer_response.outputs[0].contents.bytes_contents[0].decode()
            for r in responses
            if r.infer_response.outputs and r.infer_response.outputs[0].contents.bytes_contents
        )
        assert text == streamed and text
