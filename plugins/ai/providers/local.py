"""The local provider: the ``wordllama`` embedding model (:mod:`.embedding`), no network.

Where the model computes (``ai.local_executor``):

* ``process`` (default) — a small pool of worker processes (``local_workers``), each
  loading the model once, at nice ``local_nice``, driven from the event loop over their
  pipes (:mod:`.worker_pool`: no helper thread of the server takes the GIL for them).
  The server process never holds the model's GIL, so chat traffic keeps its latency
  while summaries run.
* ``thread`` — worker threads in the server process (lower memory; numpy and the
  tokenizer release the GIL for most of the work, not all of it).

Either way the model is loaded once per app, lazily on the first request (or at
start-up with ``local_preload``), and never on the event loop. A missing ``wordllama``
package or a dead worker answers 503 ``ai_unavailable`` with the fix.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from . import embedding
from .base import (
    Batch,
    Line,
    ProviderUnavailable,
    Replies,
    Summary,
    Usage,
    Window,
    WindowSummary,
    estimate_tokens,
)
from .embedding import EmbeddingModel
from .window import batch_of, build_summary, candidates, summarize_window, unpickle_rows
from .worker_pool import ModelFailed, WorkerDied, WorkerPool

log = logging.getLogger(__name__)

MODEL_NAME = "wordllama-l2_supercat-256"
#: messages per pickle of a whole-window request (about 0.1 ms of the loop each)
ROWS_PER_PICKLE = 250


class LocalProvider:
    name = "local"
    model = MODEL_NAME

    def __init__(self, *, workers: int, points: int, nice: int = 0,
                 executor: str = "process", sched_idle: bool = False,
                 cache_size: int = 0) -> None:
        self.points = points
        self.cache_size = cache_size
        self.workers = workers
        self.nice = nice
        self.sched_idle = sched_idle
        self.executor = executor
        self._threads: ThreadPoolExecutor | None = None  # thread mode
        self._processes: WorkerPool | None = None  # process mode
        self._model: EmbeddingModel | None = None  # thread mode only
        self._lock = asyncio.Lock()

    @property
    def worker_pids(self) -> list[int]:
        """The model's worker processes (process mode)."""
        return self._processes.pids if self._processes is not None else []

    async def start(self) -> None:
        if self._threads is not None or self._processes is not None:
            return
        async with self._lock:
            if self._threads is None and self._processes is None:
                await self._open()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.executor == "process":
            # fail fast, with the fix, when the package is missing (a worker would die)
            await loop.run_in_executor(None, _check_installed)
            pool = WorkerPool(self.workers, nice=self.nice, sched_idle=self.sched_idle,
                              cache_size=self.cache_size)
            try:
                await pool.start()
            except ProviderUnavailable:
                await pool.close()
                raise
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, Exception):
                    # no child processes here (a sandbox): degrade to threads rather
                    # than fail every request
                    log.warning("ai: cannot start model worker processes (%s: %s); "
                                "using threads", type(exc).__name__, exc)
                    self.executor = "thread"
                else:
                    raise
            else:
                self._processes = pool
                return
        threads = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="ai-local",
            initializer=embedding.lower_priority, initargs=(self.nice,))
        try:
            self._model = await loop.run_in_executor(
                threads, partial(EmbeddingModel.load, self.cache_size))
        except BaseException:
            threads.shutdown(wait=False)
            raise
        self._threads = threads

    async def _call(self, thread_fn: Callable[..., Any], worker_fn: str, *args: Any) -> Any:
        await self.start()
        try:
            if self._processes is not None:
                return await self._processes.call(worker_fn, *args)
            assert self._threads is not None
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, partial(thread_fn, *args))
        except WorkerDied:
            # killed, out of memory: this request fails, the next one gets a fresh worker
            raise ProviderUnavailable("the local AI model worker died; retry") from None
        except ProviderUnavailable:
            raise
        except Exception as exc:
            # the contract: only 503/504 leave a provider. The type alone is logged: an
            # exception's message may quote the text the model was given.
            kind = str(exc) if isinstance(exc, ModelFailed) else type(exc).__name__
            log.error("ai: the local model failed (%s)", kind)
            raise ProviderUnavailable("the local AI model failed; see the server log"
                                      ) from None

    async def close(self) -> None:
        threads, self._threads = self._threads, None
        processes, self._processes = self._processes, None
        if processes is not None:
            await processes.close()
        if threads is not None:
            await asyncio.to_thread(threads.shutdown, wait=True, cancel_futures=True)

    def _thread_model(self) -> EmbeddingModel:
        assert self._model is not None
        return self._model

    # -- summaries ------------------------------------------------------------------
    async def _pick(self, lines: list[Line]) -> list[Line]:
        # the texts go to the model, indices come back: the smallest pickle both ways
        chosen: list[int] = await self._call(
            lambda ts, p: self._thread_model().pick(ts, p), "worker_pick",
            [line.text for line in lines], self.points)
        return [lines[i] for i in chosen]

    async def summarize(self, lines: Sequence[Line], *, language: str | None) -> Summary:
        return self._summary(lines, await self._pick(list(lines)))

    async def merge(self, parts: Sequence[Summary], *, language: str | None) -> Summary:
        lines = candidates(parts)
        return self._summary(lines, await self._pick(lines))

    async def summarize_many(self, chunks: Sequence[Sequence[Line]], *,
                             language: str | None) -> Batch:
        sources = [list(chunk) for chunk in chunks]
        chosen: list[list[int]] = await self._call(
            lambda tss, p: [self._thread_model().pick(ts, p) for ts in tss],
            "worker_pick_many",
            [[line.text for line in source] for source in sources], self.points)
        return batch_of(tuple(self._summary(source, [source[i] for i in picks])
                              for source, picks in zip(sources, chosen, strict=True)))

    async def merge_many(self, groups: Sequence[Sequence[Summary]], *,
                         language: str | None) -> Batch:
        return await self.summarize_many([candidates(group) for group in groups],
                                         language=language)

    _summary = staticmethod(build_summary)

    async def summarize_window(self, rows: Sequence[tuple[int, str, str, str | None]],
                               window: Window) -> WindowSummary:
        """The whole window in one call to the worker: the readable filter, the
        chunks and the map-reduce run there (:mod:`.window`), not on the event loop.
        The rows go as pickles of ``ROWS_PER_PICKLE`` each, made a turn of the loop
        apart: one pickle of 2,000 messages held the loop 0.6 ms."""
        parts: list[bytes] = []
        for start in range(0, len(rows), ROWS_PER_PICKLE):
            if start:
                await asyncio.sleep(0)
            parts.append(pickle.dumps(list(rows[start:start + ROWS_PER_PICKLE]),
                                      protocol=pickle.HIGHEST_PROTOCOL))
        result: WindowSummary = await self._call(
            lambda r, w, p: summarize_window(self._thread_model(), p, unpickle_rows(r), w),
            "worker_summarize_window", parts, window, self.points)
        return result

    # -- smart replies --------------------------------------------------------------
    async def smart_replies(
        self, context: Sequence[Line], last: Line, *, count: int, language: str | None
    ) -> Replies:
        replies: list[str] = await self._call(
            lambda t, c: self._thread_model().replies(t, c), "worker_replies",
            last.text, count)
        usage = Usage(estimate_tokens(last.text), sum(estimate_tokens(r) for r in replies))
        return Replies(tuple(replies), usage)


def _check_installed() -> None:
    try:
        import wordllama  # noqa: F401
    except ImportError:
        raise ProviderUnavailable(
            "the local AI provider needs the `wordllama` package; "
            "pip install 'secureconnect[ai]' (or set ai.provider = \"openai\")"
        ) from None
