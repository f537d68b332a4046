"""The local provider: the ``wordllama`` embedding model, in-process, no network.

* Loaded once per app, on a worker thread (the event loop never blocks on it), from the
  weights shipped inside the wheel: ``WordLlama.load(cache_dir=<package dir>,
  disable_download=True)`` — its default path would try a hub download.
* Summary: extractive. Each message is embedded; messages most similar to the rest of
  the chunk (central) are picked with maximal marginal relevance (so a point is not
  picked twice), short chit-chat weighs less, and the picks are cited by ``seq`` in
  conversation order. A merge picks again among the chunks' picks.
* Smart replies: the intents of :mod:`.reply_set` ranked by the similarity of their
  example messages to the last incoming message; replies of the best intents first.
* Deterministic: the same input gives the same output (ties broken by position).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .base import Line, ProviderUnavailable, Replies, Summary, Usage, estimate_tokens
from .reply_set import INTENTS

MODEL_NAME = "wordllama-l2_supercat-256"
#: weight of centrality against redundancy when picking (maximal marginal relevance)
MMR_LAMBDA = 0.7
#: words from which a message counts fully (shorter ones are down-weighted)
FULL_WEIGHT_WORDS = 8
#: messages shorter than this are summary points only when little else was said
MIN_WORDS = 3
CITED_TEXT_CHARS = 200


class LocalProvider:
    name = "local"
    model = MODEL_NAME

    def __init__(self, *, threads: int, points: int, nice: int = 0) -> None:
        self.points = points
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ai-local",
                                        initializer=_lower_priority, initargs=(nice,))
        self._model: Any = None
        self._examples: np.ndarray[Any, Any] | None = None
        self._example_intent: list[int] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._model is not None:
            return
        async with self._lock:
            if self._model is None:
                await self._run(self._load)

    def _load(self) -> None:
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError:
            raise ProviderUnavailable(
                "the local AI provider needs the `wordllama` package; "
                "pip install 'secureconnect[ai]' (or set ai.provider = \"openai\")"
            ) from None
        model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        examples: list[str] = []
        owners: list[int] = []
        for i, intent in enumerate(INTENTS):
            examples += intent.examples
            owners += [i] * len(intent.examples)
        self._examples = self._embed(model, examples)
        self._example_intent = owners
        self._model = model

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _embed(model: Any, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        vectors = np.asarray(model.embed(list(texts), norm=True), dtype=np.float32)
        return vectors

    # -- summaries ------------------------------------------------------------------
    async def summarize(self, lines: Sequence[Line], *, language: str | None) -> Summary:
        await self.start()
        picked: list[Line] = await self._run(self._pick, list(lines))
        return self._summary(lines, picked)

    async def merge(self, parts: Sequence[Summary], *, language: str | None) -> Summary:
        await self.start()
        candidates = [line for part in parts for line in part.picked]
        picked: list[Line] = await self._run(self._pick, candidates)
        return self._summary(candidates, picked)

    def _pick(self, lines: list[Line]) -> list[Line]:
        # about a third of a short chunk (two at least), at most `points`
        k = min(self.points, max(min(2, len(lines)), -(-len(lines) // 3)))
        # chit-chat ("ok", "lol", "thanks") is no summary point while there is enough else
        substantial = [line for line in lines if len(line.text.split()) >= MIN_WORDS]
        if len(substantial) >= k:
            lines = substantial
        if len(lines) <= 1:
            return lines
        vectors = self._embed(self._model, [line.text for line in lines])
        sims = vectors @ vectors.T
        n = len(lines)
        centrality = (sims.sum(axis=1) - np.diag(sims)) / (n - 1)
        words = np.array([min(len(line.text.split()), FULL_WEIGHT_WORDS) for line in lines])
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
        return [lines[i] for i in sorted(chosen, key=lambda i: lines[i].seq)]

    def _summary(self, source: Sequence[Line], picked: list[Line]) -> Summary:
        bullets = [f"• [#{line.seq}] {line.speaker}: {_clip(line.text)}" for line in picked]
        text = "\n".join(bullets)
        usage = Usage(
            input_tokens=sum(estimate_tokens(line.text) for line in source),
            output_tokens=estimate_tokens(text),
        )
        return Summary(text, tuple(line.seq for line in picked), tuple(picked), usage)

    # -- smart replies --------------------------------------------------------------
    async def smart_replies(
        self, context: Sequence[Line], last: Line, *, count: int, language: str | None
    ) -> Replies:
        await self.start()
        replies: list[str] = await self._run(self._rank_replies, last.text, count)
        usage = Usage(estimate_tokens(last.text), sum(estimate_tokens(r) for r in replies))
        return Replies(tuple(replies), usage)

    def rank_intents(self, text: str) -> list[str]:
        """Intent names, best first (for tests and the benchmark)."""
        return [INTENTS[i].name for i in self._intent_order(text)]

    def _intent_order(self, text: str) -> list[int]:
        assert self._examples is not None
        query = self._embed(self._model, [text])[0]
        sims = self._examples @ query
        by_intent: dict[int, list[float]] = {}
        for sim, owner in zip(sims.tolist(), self._example_intent, strict=True):
            by_intent.setdefault(owner, []).append(sim)
        # an intent scores the mean of its two closest examples: one lucky word overlap
        # with a single example counts less than two good matches
        score = {i: sum(sorted(v, reverse=True)[:2]) / min(2, len(v))
                 for i, v in by_intent.items()}
        return sorted(score, key=lambda i: (-score[i], i))

    def _rank_replies(self, text: str, count: int) -> list[str]:
        order = self._intent_order(text)
        # the best intent's replies first, then the runner-up's best reply, and so on
        out: list[str] = list(INTENTS[order[0]].replies)
        out += [INTENTS[i].replies[0] for i in order[1:]]
        return out[:count]


def _lower_priority(nice: int) -> None:
    """Run this worker thread at a lower CPU priority than the event loop (Linux sets
    nice values per thread), so model work yields the CPU to chat traffic."""
    if nice <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CITED_TEXT_CHARS else text[: CITED_TEXT_CHARS - 1] + "…"
