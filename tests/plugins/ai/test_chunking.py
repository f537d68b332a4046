"""Unit tests of the map-reduce split (dense logic: every message exactly once, each
request within the budget, merges that always end)."""

from __future__ import annotations

import asyncio
import json

import pytest

from secureconnect_plugins.ai.chunking import group, line_cost, split, summarize_all
from secureconnect_plugins.ai.providers.base import Batch, Line, Replies, Summary


def lines(n: int, text: str = 'a "quoted" line\\ with escapes é') -> list[Line]:
    return [Line(i + 1, f"P{i % 3}", f"{text} {i}" * (1 + i % 5)) for i in range(n)]


@pytest.mark.parametrize(("n", "budget"), [(1, 500), (50, 500), (2000, 8000), (333, 1234)])
def test_split_keeps_every_line_once_and_each_chunk_within_budget(n, budget):
    source = lines(n)
    chunks = split(source, budget)
    assert [line for chunk in chunks for line in chunk] == source
    for chunk in chunks:
        data = json.dumps([{"seq": x.seq, "speaker": x.speaker, "text": x.text}
                           for x in chunk], ensure_ascii=False)
        assert len(data) <= budget
        assert sum(line_cost(x) for x in chunk) <= budget


@pytest.mark.parametrize("n", [2, 3, 7, 100])
def test_groups_have_two_or_more_parts_so_rounds_end(n):
    parts = [Summary("x" * 200) for _ in range(n)]
    groups = group(parts, 500)
    assert [p for g in groups for p in g] == parts
    assert all(len(g) >= 2 for g in groups[:-1])  # only the last may wait alone
    assert len(groups) < n  # every round lowers the count
    assert all(sum(len(p.text) + 4 for p in g) <= 500 for g in groups)


class Recorder:
    """A provider that writes down what it was asked (no model)."""

    name = "recorder"
    model = "none"

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.merges = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def summarize(self, chunk, *, language):
        self.seen += [x.seq for x in chunk]
        return Summary(f"{chunk[0].seq}-{chunk[-1].seq}", (chunk[0].seq,))

    async def merge(self, parts, *, language):
        self.merges += 1
        return Summary("+".join(p.text for p in parts), tuple(s for p in parts for s in p.cited))

    async def smart_replies(self, context, last, *, count, language):
        return Replies(())


async def test_map_reduce_reads_everything_once_and_merges_to_one():
    provider = Recorder()
    stages: list[str] = []

    async def run(stage, n, call):
        stages.append(stage)
        return await call()

    source = lines(2000)
    outcome = await summarize_all(provider, source, budget=6000, language=None, run=run)
    assert provider.seen == [x.seq for x in source]
    assert outcome.chunks == stages.count("map") > 1
    assert outcome.merges == stages.count("reduce") == provider.merges
    assert outcome.summary.text.startswith("1-") and outcome.summary.text.endswith("-2000")
    assert outcome.clipped == 0


async def test_long_partials_are_cut_to_half_the_budget_and_counted():
    class Verbose(Recorder):
        async def summarize(self, chunk, *, language):
            return Summary("é" * 5000)

        async def merge(self, parts, *, language):
            self.sizes.append(len(json.dumps([p.text for p in parts], ensure_ascii=False)))
            return await super().merge(parts, language=language)

    provider = Verbose()
    provider.sizes = []

    async def run(stage, n, call):
        return await call()

    outcome = await summarize_all(provider, lines(300), budget=2000, language=None, run=run)
    assert outcome.clipped >= outcome.chunks and provider.sizes
    assert max(provider.sizes) <= 2000


async def test_map_and_merge_requests_run_at_most_concurrency_at_once_in_order():
    in_flight = peak = 0

    class Slow(Recorder):
        async def summarize(self, chunk, *, language):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01 * (chunk[0].seq % 3))  # finish out of order
            in_flight -= 1
            return await super().summarize(chunk, language=language)

    async def run(stage, n, call):
        return await call()

    provider = Slow()
    source = lines(600)
    outcome = await summarize_all(provider, source, budget=3000, language=None, run=run,
                                  concurrency=3)
    assert peak == 3 and sorted(provider.seen) == [x.seq for x in source]
    # merged in conversation order whatever order the chunks finished in
    assert outcome.summary.text.startswith("1-") and outcome.summary.text.endswith("-600")


class BatchingRecorder(Recorder):
    """The Recorder with ``summarize_many``/``merge_many`` (as the local provider has)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def summarize_many(self, chunks, *, language):
        self.calls.append(("map", len(chunks)))
        return Batch(tuple([await self.summarize(c, language=language) for c in chunks]))

    async def merge_many(self, groups, *, language):
        self.calls.append(("reduce", len(groups)))
        return Batch(tuple([await self.merge(g, language=language) for g in groups]))


@pytest.mark.parametrize("concurrency", [1, 3, 50])
async def test_a_batching_provider_gets_one_call_per_slice_with_the_same_outcome(concurrency):
    source = lines(2000)

    async def run(stage, n, call):
        counts.append((stage, n))
        return await call()

    counts: list[tuple[str, int]] = []
    plain = await summarize_all(Recorder(), source, budget=6000, language=None, run=run,
                                concurrency=concurrency)
    plain_counts, counts = counts, []
    provider = BatchingRecorder()
    batched = await summarize_all(provider, source, budget=6000, language=None, run=run,
                                  concurrency=concurrency)
    assert batched == plain  # the same summary, chunks, merges
    assert provider.seen == [x.seq for x in source]
    maps = [n for stage, n in provider.calls if stage == "map"]
    assert sum(maps) == plain.chunks and len(maps) == min(concurrency, plain.chunks)
    assert max(maps) - min(maps) <= 1  # near-equal slices
    assert sum(n for stage, n in provider.calls if stage == "reduce") == plain.merges
    # the metered calls count the same messages in all, in fewer calls
    assert sum(n for stage, n in counts if stage == "map") == len(source)
    assert len(counts) < len(plain_counts) or concurrency >= plain.chunks


async def test_the_local_model_batched_summarises_exactly_as_chunk_by_chunk():
    pytest.importorskip("wordllama")
    from secureconnect_plugins.ai.providers.local import LocalProvider

    provider = LocalProvider(workers=1, points=8, executor="thread")

    class OneByOne:  # the same provider without its batching methods
        name, model = provider.name, provider.model
        summarize, merge = provider.summarize, provider.merge

    async def run(stage, n, call):
        return await call()

    topics = ["the release", "the budget", "the backup", "the hiring plan", "lunch"]
    source = [Line(i + 1, f"P{i % 4}", f"we should talk about {topics[i * 7 % 5]} on day {i}")
              for i in range(600)]
    try:
        batched = await summarize_all(provider, source, budget=4000, language=None, run=run,
                                      concurrency=2)
        one_by_one = await summarize_all(OneByOne(), source, budget=4000, language=None,
                                         run=run, concurrency=2)
    finally:
        await provider.close()
    assert batched.chunks > 2 and batched.merges >= 1
    assert batched.summary.text == one_by_one.summary.text
    assert batched.summary.cited == one_by_one.summary.cited
