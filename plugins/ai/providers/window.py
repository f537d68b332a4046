"""The local model's whole-window summary, computed where the model is (its worker
process, or a worker thread in ``thread`` mode).

The server sends the window's messages once — the encrypted ones already dropped — and
gets the summary back: the readable filter (:func:`..readable.readable_lines`), the chunking
and the map-reduce (:func:`..chunking.summarize_all`, the very code the service runs for
other providers) all run here, over the model directly. The server's event loop keeps
only the read of the window and the drop of the encrypted messages, and one round trip.

The outcome equals the line-by-line path's: the same filter, the same chunks, the same
picks (:func:`build_summary` is the local provider's own). Each model call is recorded
as a :class:`.base.Call` for the service's audit and metrics.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..chunking import summarize_all
from ..readable import Row, readable_lines
from .base import Batch, Call, Line, Summary, Usage, Window, WindowSummary, estimate_tokens

#: characters of a message quoted in a bullet of the summary
CITED_TEXT_CHARS = 200


class Picker(Protocol):
    def pick(self, texts: list[str], points: int) -> list[int]: ...


def build_summary(source: Sequence[Line], picked: list[Line]) -> Summary:
    """The extractive summary of ``source``: one bullet per picked line, citing it."""
    bullets = [f"• [#{line.seq}] {line.speaker}: {clip_text(line.text)}" for line in picked]
    text = "\n".join(bullets)
    usage = Usage(
        input_tokens=sum(estimate_tokens(line.text) for line in source),
        output_tokens=estimate_tokens(text),
    )
    return Summary(text, tuple(line.seq for line in picked), tuple(picked), usage)


def batch_of(parts: tuple[Summary, ...]) -> Batch:
    """Several partial summaries as one call's answer (their usage summed)."""
    return Batch(parts, Usage(sum(p.usage.input_tokens for p in parts),
                              sum(p.usage.output_tokens for p in parts)))


def candidates(parts: Sequence[Summary]) -> list[Line]:
    """What a merge of ``parts`` picks from: the lines each part picked."""
    return [line for part in parts for line in part.picked]


def clip_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CITED_TEXT_CHARS else text[: CITED_TEXT_CHARS - 1] + "…"


def unpickle_rows(parts: Sequence[bytes]) -> list[Row]:
    """The rows of a whole-window request, sent as several pickles (from the server
    process: the local provider's own pipe, never a client's bytes)."""
    return [row for part in parts for row in pickle.loads(part)]


def summarize_window(model: Picker, points: int, rows: Sequence[Row],
                     window: Window) -> WindowSummary:
    """The whole window's summary (synchronous: a worker's job)."""
    lines = readable_lines(rows, reader_id=window.reader_id, max_chars=window.max_message_chars)
    if not lines.lines:
        return WindowSummary(Summary(""), 0, lines.other_skipped, lines.truncated, 0, 0, ())
    calls: list[Call] = []

    async def run(stage: str, n: int, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        result = await call()
        calls.append(Call(stage, n, result.usage,
                          int((time.perf_counter() - started) * 1000)))
        return result

    # one "round trip" per stage: the model is right here
    outcome = asyncio.run(summarize_all(_Inline(model, points), lines.lines,
                                        budget=window.budget, language=window.language,
                                        run=run, concurrency=1))
    summary = outcome.summary
    return WindowSummary(
        # the picked lines stay here: the server needs the text and the citations
        Summary(summary.text, summary.cited, (), summary.usage),
        len(lines.lines), lines.other_skipped, lines.truncated, outcome.chunks,
        outcome.clipped, tuple(calls))


class _Inline:
    """The local provider's summary calls over a model in this process."""

    def __init__(self, model: Picker, points: int) -> None:
        self.model = model
        self.points = points

    def _pick(self, lines: list[Line]) -> Summary:
        chosen = self.model.pick([line.text for line in lines], self.points)
        return build_summary(lines, [lines[i] for i in chosen])

    async def summarize(self, lines: Sequence[Line], *, language: str | None) -> Summary:
        return self._pick(list(lines))

    async def merge(self, parts: Sequence[Summary], *, language: str | None) -> Summary:
        return self._pick(candidates(parts))

    async def summarize_many(self, chunks: Sequence[Sequence[Line]], *,
                             language: str | None) -> Batch:
        return batch_of(tuple(self._pick(list(chunk)) for chunk in chunks))

    async def merge_many(self, groups: Sequence[Sequence[Summary]], *,
                         language: str | None) -> Batch:
        return await self.summarize_many([candidates(group) for group in groups],
                                         language=language)
