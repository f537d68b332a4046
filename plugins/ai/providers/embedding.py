"""The wordllama model and the computations on it: pure, synchronous, CPU-bound.

:class:`EmbeddingModel` is used on worker threads or in a worker process (see
:mod:`.local`), never on the event loop.

* Loaded from the weights shipped inside the wheel: ``WordLlama.load(cache_dir=<package
  dir>, disable_download=True)`` — its default path would try a hub download.
* ``pick``: extractive summary points. Each message is embedded; messages most similar
  to the rest of the chunk (central) are picked with maximal marginal relevance (so a
  point is not picked twice); short chit-chat weighs less.
* ``replies``: the intents of :mod:`.reply_set` ranked by the similarity of their
  example messages to the last incoming message; replies of the best intents first.
* Deterministic: the same input gives the same output (ties broken by position).
* Each text's vector is kept (:mod:`.vector_cache`, by a digest of the text): a
  conversation summarised again embeds only its new messages.

The worker process starts in :mod:`.worker` (priority and threads first, then this
module). Its entry points (``worker_*``) keep the process's one model in a module
variable: a worker process serves exactly one app, and the variable is the pool
initializer's documented way to hand state to later calls.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import numpy as np
except ImportError:  # no `ai` extra: the server starts, EmbeddingModel.load names the fix
    np = None  # type: ignore[assignment]

from .base import ProviderUnavailable

if TYPE_CHECKING:
    from .base import Window, WindowSummary
from .reply_set import INTENTS
from .vector_cache import VectorCache

#: weight of centrality against redundancy when picking (maximal marginal relevance)
MMR_LAMBDA = 0.7
#: words from which a message counts fully (shorter ones are down-weighted)
FULL_WEIGHT_WORDS = 8
#: messages shorter than this are summary points only when little else was said
MIN_WORDS = 3


class EmbeddingModel:
    def __init__(self, model: Any, *, cache_size: int = 0) -> None:
        self._model = model
        self.cache = VectorCache(cache_size)
        _tokenize_without_offsets(model)
        examples: list[str] = []
        owners: list[int] = []
        for i, intent in enumerate(INTENTS):
            examples += intent.examples
            owners += [i] * len(intent.examples)
        self._examples = self._compute(examples)
        self._example_intent = owners

    @classmethod
    def load(cls, cache_size: int = 0) -> EmbeddingModel:
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError:
            raise ProviderUnavailable(
                "the local AI provider needs the `wordllama` package; "
                "pip install 'secureconnect[ai]' (or set ai.provider = \"openai\")"
            ) from None
        try:
            model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent,
                                   disable_download=True)
        except Exception as exc:  # weights missing or unreadable: degrade, say why
            raise ProviderUnavailable(
                f"the local AI model could not be loaded ({type(exc).__name__}); "
                "reinstall 'secureconnect[ai]'") from None
        return cls(model, cache_size=cache_size)

    def _embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return self.cache.embed(texts, self._compute)

    def _compute(self, texts: list[str]) -> np.ndarray[Any, Any]:
        return np.asarray(self._model.embed(texts, norm=True), dtype=np.float32)

    # -- summaries ------------------------------------------------------------------
    def pick(self, texts: Sequence[str], points: int) -> list[int]:
        """Indices (ascending) of about a third of a short chunk's texts (two at least),
        at most ``points``. The texts come in conversation order; only texts and
        indices cross to a worker process and back (compact to pickle)."""
        k = min(points, max(min(2, len(texts)), -(-len(texts) // 3)))
        # chit-chat ("ok", "lol", "thanks") is no summary point while there is enough else
        pool = [i for i, text in enumerate(texts) if len(text.split()) >= MIN_WORDS]
        if len(pool) < k:
            pool = list(range(len(texts)))
        if len(pool) <= 1:
            return pool
        vectors = self._embed([texts[i] for i in pool])
        sims = vectors @ vectors.T
        n = len(pool)
        centrality = (sims.sum(axis=1) - np.diag(sims)) / (n - 1)
        words = np.array([min(len(texts[i].split()), FULL_WEIGHT_WORDS) for i in pool])
        score = centrality * (0.5 + 0.5 * words / FULL_WEIGHT_WORDS)
        chosen: list[int] = []
        best_sim = np.full(n, -np.inf, dtype=np.float32)
        for _ in range(min(k, n)):
            redundancy = np.where(np.isfinite(best_sim), best_sim, 0.0)
            mmr = MMR_LAMBDA * score - (1 - MMR_LAMBDA) * redundancy
            mmr[chosen] = -np.inf
            i = int(np.argmax(mmr))  # first maximum: deterministic ties
            chosen.append(i)
            best_sim = np.maximum(best_sim, sims[i])
        return sorted(pool[i] for i in chosen)

    # -- smart replies --------------------------------------------------------------
    def intent_order(self, text: str) -> list[int]:
        query = self._embed([text])[0]
        sims = self._examples @ query
        by_intent: dict[int, list[float]] = {}
        for sim, owner in zip(sims.tolist(), self._example_intent, strict=True):
            by_intent.setdefault(owner, []).append(sim)
        # an intent scores the mean of its two closest examples: one lucky word overlap
        # with a single example counts less than two good matches
        score = {i: sum(sorted(v, reverse=True)[:2]) / min(2, len(v))
                 for i, v in by_intent.items()}
        return sorted(score, key=lambda i: (-score[i], i))

    def replies(self, text: str, count: int) -> list[str]:
        order = self.intent_order(text)
        # the best intent's replies first, then the runner-up's best reply, and so on
        out: list[str] = list(INTENTS[order[0]].replies)
        out += [INTENTS[i].replies[0] for i in order[1:]]
        return out[:count]


def _tokenize_without_offsets(model: Any) -> None:
    """wordllama tokenizes with ``encode_batch``, which also computes every token's
    character offsets; the model uses only the ids and the mask. ``encode_batch_fast``
    (tokenizers 0.20 and later) gives the same encodings without offsets — about a
    quarter less CPU per embedded message; the vectors are bit for bit the same
    (``test_vector_cache.py``)."""
    tokenizer = getattr(model, "tokenizer", None)
    fast = getattr(tokenizer, "encode_batch_fast", None)
    if fast is None:
        return

    def tokenize(texts: str | list[str]) -> list[Any]:
        return list(fast([texts] if isinstance(texts, str) else texts,
                         is_pretokenized=False, add_special_tokens=False))

    model.tokenize = tokenize


def lower_priority(nice: int) -> None:
    """Run the calling thread at a lower CPU priority than the event loop (Linux sets
    nice values per thread; elsewhere nothing happens)."""
    if nice <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


# -- worker-process entry points --------------------------------------------------------
_worker_model: EmbeddingModel | None = None


def worker_load(cache_size: int = 0) -> None:
    """Load the worker process's model (called by :func:`.worker.init`, once the
    process's priority is lowered and its threads capped)."""
    global _worker_model
    _worker_model = EmbeddingModel.load(cache_size)


def _model() -> EmbeddingModel:
    if _worker_model is None:  # pragma: no cover - the initializer failed
        raise ProviderUnavailable("the local AI model is not loaded in its worker")
    return _worker_model


def worker_pick(texts: list[str], points: int) -> list[int]:
    return _model().pick(texts, points)


def worker_pick_many(chunks: list[list[str]], points: int) -> list[list[int]]:
    """:func:`worker_pick` of several chunks in one call (one round trip to the worker)."""
    model = _model()
    return [model.pick(texts, points) for texts in chunks]


def worker_replies(text: str, count: int) -> list[str]:
    return _model().replies(text, count)


def worker_summarize_window(parts: list[bytes], window: Window,
                            points: int) -> WindowSummary:
    """A whole window's summary in the worker (:mod:`.window`); ``parts`` are the
    pickled slices of its rows."""
    from .window import summarize_window, unpickle_rows

    return summarize_window(_model(), points, unpickle_rows(parts), window)
