"""Long conversations: a character budget per provider request, map-reduce beyond it.

``split`` cuts the readable lines into consecutive chunks whose cost (text + framing)
fits ``budget``; every line lands in exactly one chunk, so nothing is dropped. The map
step summarises each chunk; the reduce step merges the partial summaries in groups that
fit the budget (at least two per merged group, so every round lowers their number and
the rounds end; a partial longer than half the budget is cut to it and counted) until
one summary is left. A 2,000-message conversation therefore
costs a bounded number of bounded requests and never overflows a context window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from functools import partial
from json.encoder import encode_basestring
from typing import Any, Protocol, TypeVar, cast

from .providers.base import Batch, BatchingProvider, Line, Summary

#: a list separator (", ") per item of the JSON array a provider receives
SEPARATOR = 2

#: lines handled in one step on the event loop before yielding to other requests
#: (about 0.1 ms of work: a 2,000-message summary takes many short turns, not one long;
#: see chat's ``interface._TEXT_PAGE`` for why short)
STEP_LINES = 125

Part = TypeVar("Part", Summary, Batch)


class Summarizer(Protocol):
    """What the map-reduce asks of a provider (a :class:`.providers.base.Provider`, or
    the local model inside its worker)."""

    async def summarize(self, lines: Sequence[Line], *, language: str | None) -> Summary: ...

    async def merge(self, parts: Sequence[Summary], *, language: str | None) -> Summary: ...


class Runner(Protocol):
    """``run(stage, message_count, call)`` — the service's metered, audited provider
    call (one call: a summary, or a batch of them from a batching provider)."""

    def __call__(self, stage: str, message_count: int,
                 call: Callable[[], Awaitable[Part]], /) -> Awaitable[Part]: ...


#: ``{"seq": `` … ``, "speaker": `` … ``, "text": `` … ``}`` as json.dumps writes them
_ITEM_FRAME = len('{"seq": , "speaker": , "text": }')


def line_cost(line: Line) -> int:
    """Exactly what the line adds to the JSON data of a request (escapes included),
    without building the JSON: this runs on the event loop for every message."""
    return (_ITEM_FRAME + len(str(line.seq)) + len(encode_basestring(line.speaker))
            + len(encode_basestring(line.text)) + SEPARATOR)


def part_cost(part: Summary) -> int:
    return len(encode_basestring(part.text)) + SEPARATOR


def split(lines: Sequence[Line], budget: int) -> list[list[Line]]:
    """Consecutive chunks of ``lines``, each within ``budget`` (a line alone may reach
    it: the service cuts single messages to ``max_message_chars`` < budget first)."""
    splitter = _Splitter(budget)
    splitter.feed(lines)
    return splitter.done()


async def split_in_steps(lines: Sequence[Line], budget: int,
                         step: int = STEP_LINES) -> list[list[Line]]:
    """:func:`split` on the event loop, ``step`` lines at a time with a yield between:
    other requests (chat's sends) run between the steps of a long conversation."""
    splitter = _Splitter(budget)
    for start in range(0, len(lines), step):
        if start:
            await asyncio.sleep(0)
        splitter.feed(lines[start:start + step])
    return splitter.done()


class _Splitter:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.chunks: list[list[Line]] = []
        self.current: list[Line] = []
        self.used = 0

    def feed(self, lines: Sequence[Line]) -> None:
        budget, current, used = self.budget, self.current, self.used
        for line in lines:
            cost = line_cost(line)
            if current and used + cost > budget:
                self.chunks.append(current)
                current, used = [], 0
            current.append(line)
            used += cost
        self.current, self.used = current, used

    def done(self) -> list[list[Line]]:
        if self.current:
            self.chunks.append(self.current)
            self.current, self.used = [], 0
        return self.chunks


def group(parts: Sequence[Summary], budget: int) -> list[list[Summary]]:
    groups: list[list[Summary]] = []
    current: list[Summary] = []
    used = 0
    for part in parts:
        cost = part_cost(part)
        if len(current) >= 2 and used + cost > budget:
            groups.append(current)
            current, used = [], 0
        current.append(part)
        used += cost
    if current:
        groups.append(current)  # a last single part waits for the next round
    return groups


@dataclass(frozen=True)
class Outcome:
    summary: Summary
    chunks: int
    merges: int
    #: partial summaries cut to fit a merge request
    clipped: int


async def summarize_all(
    provider: Summarizer, lines: Sequence[Line], *, budget: int, language: str | None,
    run: Runner, concurrency: int = 1,
) -> Outcome:
    """Summarise ``lines`` within ``budget`` per request; at most ``concurrency`` map or
    merge requests of this summary run at once (results keep conversation order; the
    first failure cancels the rest and is raised as itself)."""
    chunks = await split_in_steps(lines, budget)
    if len(chunks) == 1:
        only = chunks[0]
        summary = await run("single", len(only),
                            partial(provider.summarize, only, language=language))
        return Outcome(summary, 1, 0, 0)
    slots = asyncio.Semaphore(max(1, concurrency))
    batching = cast(BatchingProvider, provider) if hasattr(provider, "summarize_many") else None

    async def bounded(stage: str, n: int, call: Callable[[], Awaitable[Part]]) -> Part:
        async with slots:
            return await run(stage, n, call)

    async def each(stage: str, items: Sequence[Sequence[Any]],
                   one: Callable[..., Awaitable[Summary]],
                   many: Callable[..., Awaitable[Batch]] | None) -> list[Summary]:
        """One call per item; or, from a batching provider, one call per slice of the
        items (at most ``concurrency`` slices: the same parallelism, fewer round trips)."""
        if many is None:
            return await _all([bounded(stage, len(item), partial(one, item, language=language))
                               for item in items])
        batches = await _all([bounded(stage, sum(map(len, part)),
                                      partial(many, part, language=language))
                              for part in _slices(items, concurrency)])
        return [summary for batch in batches for summary in batch.parts]

    parts = await each("map", chunks, provider.summarize,
                       batching.summarize_many if batching else None)
    # Two partial summaries must fit one merge request: a provider that answered
    # longer than half the budget has its partial cut (counted, never silent).
    cap = max(1, budget // 2 - 2 * SEPARATOR)
    clipped = 0
    merges = 0
    while len(parts) > 1:
        for i, part in enumerate(parts):
            if part_cost(part) > cap:
                parts[i] = _clip(part, cap)
                clipped += 1
        batches = group(parts, budget)
        pending = [batch for batch in batches if len(batch) > 1]
        merged = iter(await each("reduce", pending, provider.merge,
                                 batching.merge_many if batching else None))
        merges += len(pending)
        parts = [next(merged) if len(batch) > 1 else batch[0] for batch in batches]
    return Outcome(parts[0], len(chunks), merges, clipped)


def _slices(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    """``items`` cut into at most ``n`` consecutive slices of near-equal length."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


async def _all(calls: list[Coroutine[Any, Any, Part]]) -> list[Part]:
    """Run ``calls`` together; results in their order. The first failure cancels the
    rest and is raised as itself (a provider's 503/504 problem), not as an exception
    group, which the HTTP layer would not recognise."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


def _first(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    found = failed.exceptions[0]
    return _first(found) if isinstance(found, BaseExceptionGroup) else found


def _clip(part: Summary, cap: int) -> Summary:
    text = part.text
    while text and part_cost(Summary(text)) > cap:
        text = text[: max(0, len(text) - max(1, (part_cost(Summary(text)) - cap)))]
    return replace(part, text=text)
