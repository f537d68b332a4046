"""Long conversations: a character budget per provider request, map-reduce beyond it.

``split`` cuts the readable lines into consecutive chunks whose cost (text + framing)
fits ``budget``; every line lands in exactly one chunk, so nothing is dropped. The map
step summarises each chunk; the reduce step merges the partial summaries in groups that
fit the budget (at least two per group, so each round at least halves their number and
the rounds end) until one summary is left. A 2,000-message conversation therefore
costs a bounded number of bounded requests and never overflows a context window.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from .providers.base import Line, Provider, Summary

#: a list separator (", ") per item of the JSON array a provider receives
SEPARATOR = 2

#: ``run(stage, message_count, call)`` — the service's metered, audited provider call
Runner = Callable[[str, int, Callable[[], Awaitable[Summary]]], Awaitable[Summary]]


def line_cost(line: Line) -> int:
    """Exactly what the line adds to the JSON data of a request (escapes included)."""
    item = {"seq": line.seq, "speaker": line.speaker, "text": line.text}
    return len(json.dumps(item, ensure_ascii=False)) + SEPARATOR


def part_cost(part: Summary) -> int:
    return len(json.dumps(part.text, ensure_ascii=False)) + SEPARATOR


def split(lines: Sequence[Line], budget: int) -> list[list[Line]]:
    """Consecutive chunks of ``lines``, each within ``budget`` (a line alone may reach
    it: the service cuts single messages to ``max_message_chars`` < budget first)."""
    chunks: list[list[Line]] = []
    current: list[Line] = []
    used = 0
    for line in lines:
        cost = line_cost(line)
        if current and used + cost > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(line)
        used += cost
    if current:
        chunks.append(current)
    return chunks


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
        if len(current) == 1 and groups:
            groups[-1].append(current[0])
        else:
            groups.append(current)
    return groups


@dataclass(frozen=True)
class Outcome:
    summary: Summary
    chunks: int
    merges: int


async def summarize_all(
    provider: Provider, lines: Sequence[Line], *, budget: int, language: str | None,
    run: Runner,
) -> Outcome:
    chunks = split(lines, budget)
    if len(chunks) == 1:
        only = chunks[0]
        summary = await run("single", len(only),
                            partial(provider.summarize, only, language=language))
        return Outcome(summary, 1, 0)
    parts: list[Summary] = []
    for chunk in chunks:  # sequential: one request at a time per user request
        parts.append(await run("map", len(chunk),
                               partial(provider.summarize, chunk, language=language)))
    merges = 0
    while len(parts) > 1:
        merged: list[Summary] = []
        for batch in group(parts, budget):
            merged.append(await run("reduce", len(batch),
                                    partial(provider.merge, batch, language=language)))
            merges += 1
        parts = merged
    return Outcome(parts[0], len(chunks), merges)
