"""A GGUF chat model on llama.cpp: templating, token accounting and a cancellable generation loop.

:class:`Engine` holds one ``llama_cpp.Llama`` and runs one generation at a
time (a llama.cpp context is one sequence). :meth:`Engine.chat` is the LLM
convention's generate function (:mod:`anyserve.llm`):

- the messages go through the chat template stored in the GGUF
  (``tokenizer.chat_template``, rendered by llama-cpp-python's
  ``Jinja2ChatFormatter`` exactly as its ``create_chat_completion`` does),
  and the rendered prompt is tokenized once; those tokens are both what the
  model reads and the ``prompt_tokens`` reported;
- tokens come from ``Llama.generate``, one per step, and each is streamed
  as soon as its text is complete (UTF-8 sequences split over tokens are
  held until whole, and text that could begin a ``stop`` string is held
  until it cannot); ``completion_tokens`` counts the tokens sampled (the
  end-of-generation token excluded, as llama-cpp-python counts);
- the generator is closed by the convention when the client goes away: the
  ``yield`` raises ``GeneratorExit``, which closes llama-cpp-python's own
  generator at its ``yield`` too, so no further token is computed (llama.cpp
  evaluates the next token only when asked for it).

:class:`LlamaCpp` is the worker class the plugin registers: ``on_start``
loads the model, so the worker is ``hot`` only once it is in memory, and
``on_cleanup`` frees it when the worker is stopped (idle, evicted, shutdown).
"""

from __future__ import annotations

import codecs
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyserve import Context, ModelInferRequest, ModelInferResponse, Worker
from anyserve.errors import InvalidField
from anyserve.llm import LENGTH, STOP, ChatRequest, Delta, Message, Sampling, Usage, generate_handlers, read_chat
from anyserve.stream import Stream
from anyserve_engine_llamacpp import model

log = logging.getLogger("anyserve_engine_llamacpp")

#: Sampling defaults where the request says nothing: llama-cpp-python's OpenAI server's.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
#: llama.cpp's "pick a random seed" value; a request's seed is kept below it.
RANDOM_SEED = 0xFFFFFFFF

#: Engine options a request may add (OpenAI's extra body: ``extra_body={"top_k": 20}``), with their types.
EXTRA_OPTIONS: dict[str, type] = {
    "top_k": int,
    "min_p": float,
    "typical_p": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
}


def sampling_options(sampling: Sampling, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``Llama.generate`` from the convention's sampling and the request's extras.

    ``temperature`` 0 is greedy decoding (deterministic); unset values take
    llama-cpp-python's server defaults (temperature 0.8, top_p 0.95,
    top_k 40, min_p 0.05). ``top_k``, ``min_p``, ``typical_p``,
    ``repeat_penalty``, ``presence_penalty`` and ``frequency_penalty`` may
    come in the request's extra fields; a wrong type is a 400 naming it.
    """
    options: dict[str, Any] = {
        "temp": DEFAULT_TEMPERATURE if sampling.temperature is None else float(sampling.temperature),
        "top_p": DEFAULT_TOP_P if sampling.top_p is None else float(sampling.top_p),
        "top_k": DEFAULT_TOP_K,
        "min_p": DEFAULT_MIN_P,
    }
    for name, kind in EXTRA_OPTIONS.items():
        value = (extra or {}).get(name)
        if value is None:
            continue
        wrong_type = not isinstance(value, int if kind is int else int | float)
        if isinstance(value, bool) or wrong_type:
            raise InvalidField(name, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise InvalidField(name, f"must be finite, got {value!r}")
        options[name] = kind(value)
    return options


def ignore_eos(extra: Mapping[str, Any] | None) -> bool:
    """The request's ``ignore_eos`` (as vLLM names it, and load tools send it): generate past end-of-generation tokens.

    With it an answer runs to ``max_tokens`` (or the context window) whatever the model would say.
    """
    value = (extra or {}).get("ignore_eos", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidField("ignore_eos", f"must be a boolean, got {value!r}")
    return value


def llama_seed(seed: int | None) -> int:
    """The llama.cpp sampler seed for a request's ``seed``: a fixed uint32 for a seed, random without one."""
    if seed is None:
        return RANDOM_SEED
    return seed % RANDOM_SEED  # 0xFFFFFFFF itself would mean "random"


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the beginning of a stop string (kept unsent)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string in ``text`` begins, or None."""
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found) if found else None


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The chat messages as a chat template reads them: role and text content (other fields kept)."""
    return [
        {**{k: v for k, v in m.extra.items() if k != "content"}, "role": m.role, "content": m.content} for m in messages
    ]


@dataclass
class Generation:
    """What one generation did; logged when it ends and kept on the engine as ``last``."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str | None = None
    seconds: float = 0.0
    first_token_seconds: float | None = None
    #: The client went away and the loop was stopped.
    cancelled: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class Engine:
    """One loaded GGUF chat model; generations run one at a time (others wait for the lock)."""

    def __init__(self, llm: Any, path: Path, settings: model.Settings, template: str) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = llm
        self.path = path
        self.settings = settings
        self.template = template
        self._llama_cpp = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        # The template's bos_token / eos_token, as llama-cpp-python's create_chat_completion gives them.
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(llm.token_eos()),
            bos_token=self._token_text(llm.token_bos()),
            add_generation_prompt=True,
        )
        self._lock = threading.Lock()
        self.last: Generation | None = None

    # -- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, settings: model.Settings) -> Engine:
        """Find the GGUF file ``settings`` name and load it (llama-cpp-python imported here), logging the cost."""
        path = model.model_path(settings)
        override = model.chat_template(settings)
        size = path.stat().st_size
        log.info(
            "loading %s from %s (%s; n_ctx %d, %d thread%s)",
            settings.model_name,
            path,
            model.human_size(size),
            settings.n_ctx,
            settings.threads,
            "" if settings.threads == 1 else "s",
        )
        start = time.perf_counter()
        from llama_cpp import Llama

        imported = time.perf_counter() - start
        llm = Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=settings.threads,
            # The prompt too: llama-cpp-python would read it with every core, and llama.cpp's threads
            # spin at each barrier, so one thread more than the cores free costs seconds per prompt.
            n_threads_batch=settings.threads,
            verbose=False,
        )
        template = override or llm.metadata.get("tokenizer.chat_template")
        if not template:
            llm.close()
            raise model.SettingsError(
                f"{path} has no chat template (GGUF metadata tokenizer.chat_template): "
                "set ANYSERVE_LLAMACPP_CHAT_TEMPLATE to a Jinja chat template file"
            )
        engine = cls(llm, path, settings, template)
        log.info(
            "loaded %s in %.2fs (llama.cpp import %.2fs; %s chat template)",
            settings.model_name,
            time.perf_counter() - start,
            imported,
            "configured" if override else "the GGUF's",
        )
        return engine

    def close(self) -> None:
        """Free the model and its context (waits for a running generation to end)."""
        with self._lock:
            self.llm.close()
        log.info("unloaded %s", self.settings.model_name)

    # -- tokens --------------------------------------------------------------------------

    def prompt(self, messages: Sequence[Message]) -> str:
        """The chat template rendered for ``messages``, ending with the assistant's turn."""
        try:
            return self._formatter(messages=template_messages(messages)).prompt
        except Exception as exc:  # the template's raise_exception (e.g. roles out of order) or a Jinja error
            raise InvalidField("messages", f"the model's chat template refused them: {exc}") from None

    def tokenize_prompt(self, messages: Sequence[Message]) -> list[int]:
        """The tokens the model reads for ``messages``: the templated prompt, its special tokens parsed."""
        # The template writes its own BOS where the model wants one (added_special), as llama-cpp-python assumes.
        return self.llm.tokenize(self.prompt(messages).encode("utf-8"), add_bos=False, special=True)

    def _token_text(self, token: int) -> str:
        """A token's text as the vocabulary stores it (special tokens included); "" for none (-1)."""
        if token == -1:
            return ""
        return self._llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, <|im_end|>...)."""
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def _logprobs(self, token: int, top: int) -> dict[str, Any]:
        """OpenAI's logprob entry for ``token``: log-softmax of the logits it was sampled from, and the top ones."""
        import numpy as np

        row = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)  # the logits the token was sampled from
        logits = np.ctypeslib.as_array(row, shape=(self.llm.n_vocab(),))
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        entry = self._token_entry(token, float(logprobs[token]))
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            best = best[np.argsort(-logprobs[best])]
            entry["top_logprobs"] = [self._token_entry(int(t), float(logprobs[t])) for t in best]
        else:
            entry["top_logprobs"] = []
        return entry

    def _token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        piece = self.llm.detokenize([token])
        return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}

    # -- generation ----------------------------------------------------------------------

    def chat(self, request: ChatRequest) -> Iterator[str | Delta]:
        """The convention's generate function: text deltas, then a last ``Delta`` with finish reason and usage."""
        sampling = request.sampling
        options = sampling_options(sampling, request.extra)
        keep_going = ignore_eos(request.extra)
        if not request.messages:
            raise InvalidField("messages", "must not be empty")
        with self._lock:
            yield from self._generate(self.tokenize_prompt(request.messages), sampling, options, request.id, keep_going)

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        options: dict[str, Any],
        request_id: str,
        keep_going: bool = False,
    ) -> Iterator[str | Delta]:
        llm = self.llm
        n_ctx = llm.n_ctx()
        if len(prompt) >= n_ctx:
            raise InvalidField(
                "messages",
                f"the prompt is {len(prompt)} tokens, the context window {n_ctx} "
                "(ANYSERVE_LLAMACPP_N_CTX): no room to answer",
            )
        room = n_ctx - len(prompt)
        limit = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        stops = [s for s in sampling.stop if s]
        want_logprobs = sampling.logprobs
        top_logprobs = sampling.top_logprobs or 0

        run = Generation(prompt_tokens=len(prompt))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # decoded text not sent yet (it may begin a stop string)
        pending_logprobs: list[dict[str, Any]] = []
        stopped_by_string = False
        llm.set_seed(llama_seed(sampling.seed))
        start = time.perf_counter()
        tokens = llm.generate(prompt, **options)
        try:
            for token in tokens:
                if run.first_token_seconds is None:
                    run.first_token_seconds = time.perf_counter() - start
                if not keep_going and self.is_end(token):
                    run.finish_reason = STOP
                    break
                run.completion_tokens += 1
                if want_logprobs:
                    pending_logprobs.append(self._logprobs(token, top_logprobs))
                pending += decoder.decode(llm.detokenize([token]))
                if stops:
                    at = find_stop(pending, stops)
                    if at is not None:
                        pending = pending[:at]
                        run.finish_reason = STOP
                        stopped_by_string = True
                        break
                    keep = held_back(pending, stops)
                else:
                    keep = 0
                if run.completion_tokens >= limit:
                    run.finish_reason = LENGTH
                    break
                ready = pending[: len(pending) - keep] if keep else pending
                if ready:
                    pending = pending[len(ready) :]
                    if want_logprobs:
                        entries, pending_logprobs = pending_logprobs, []
                        yield Delta(ready, logprobs=entries)
                    else:
                        yield ready
        except GeneratorExit:
            run.cancelled = True
            raise
        finally:
            tokens.close()  # stops llama-cpp-python's loop at its yield: no further token is evaluated
            run.seconds = time.perf_counter() - start
            self.last = run
            self._log(run, request_id)
        if not stopped_by_string:
            pending += decoder.decode(b"", final=True)  # an incomplete UTF-8 sequence at the very end
        usage = Usage(prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens)
        yield Delta(pending, finish_reason=run.finish_reason or LENGTH, usage=usage,
                    logprobs=pending_logprobs if want_logprobs else None)  # fmt: skip

    def _log(self, run: Generation, request_id: str) -> None:
        first = f"{run.first_token_seconds * 1000:.0f} ms" if run.first_token_seconds is not None else "-"
        if run.cancelled:
            log.info(
                "request %s: the client went away; generation stopped after %d tokens (%.2fs, first token after %s)",
                request_id or "-",
                run.completion_tokens,
                run.seconds,
                first,
            )
        else:
            log.debug(
                "request %s: %d prompt + %d completion tokens in %.2fs (%.1f tokens/s, first token after %s), "
                "finish %s",
                request_id or "-",
                run.prompt_tokens,
                run.completion_tokens,
                run.seconds,
                run.tokens_per_second,
                first,
                run.finish_reason,
            )


class LlamaCpp(Worker):
    """The worker class serving the configured GGUF chat model; ``hot`` once the model is loaded.

    The settings are read when the worker starts (the same ``ANYSERVE_LLAMACPP_*``
    variables the replica registered the capability with).
    """

    engine: Engine | None = None

    def on_start(self) -> None:
        self.engine = Engine.load(model.settings_from_env())
        self._stream, self._unary = generate_handlers(self.engine.chat, read_chat)

    def handle_stream(self, request: ModelInferRequest, context: Context, stream: Stream) -> None:
        self._stream(request, context, stream)

    def handle(self, request: ModelInferRequest, context: Context) -> ModelInferResponse:
        return self._unary(request, context)

    def on_cleanup(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
