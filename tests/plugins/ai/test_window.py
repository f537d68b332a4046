"""The local model's whole-window summaries: the worker filters, chunks and merges
exactly as the service does line by line, and never gets an encrypted message."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest

from secureconnect.app import KERNEL
from secureconnect_plugins.ai.chunking import summarize_all
from secureconnect_plugins.ai.providers.base import (
    Call,
    Summary,
    Usage,
    Window,
    WindowSummary,
)
from secureconnect_plugins.ai.readable import drop_encrypted, readable_lines
from secureconnect_plugins.chat.api import MessageText

from .helpers import SECRET, TALK, make_room, opt_in, post, seed

READER_ID = "u-reader"
TOPICS = ["the release", "the budget", "the backup", "the hiring plan", "lunch", "the demo"]


def window_of(n: int) -> list[MessageText]:
    """``n`` messages of four senders (the reader among them) with every kind a window
    holds: encrypted, deleted, blank, not text, over-long."""
    out = []
    for i in range(n):
        seq, sender = i + 1, ["u-a", "u-b", READER_ID, "u-c"][i % 4]
        content: str | None = f"we should talk about {TOPICS[i * 7 % 6]} on day {i}"
        kind, encrypted = "text", False
        if i % 11 == 3:
            content, encrypted = f"{SECRET}-{i}", True
        elif i % 17 == 5:
            content = None  # deleted
        elif i % 19 == 7:
            content = "   "
        elif i % 23 == 9:
            kind = "file"
        elif i % 29 == 2:
            content = "long " * 300
        elif i % 5 == 0:
            kind = "poll"
        out.append(MessageText(seq, sender, kind, content, encrypted))
    return out


async def test_the_worker_summarises_a_window_exactly_as_the_service_line_by_line():
    pytest.importorskip("wordllama")
    from secureconnect_plugins.ai.providers.local import LocalProvider

    rows, dropped = drop_encrypted(window_of(900))
    assert dropped == len([i for i in range(900) if i % 11 == 3])
    assert all(SECRET not in (r[3] or "") for r in rows)
    window = Window(READER_ID, max_message_chars=400, budget=4000)
    lines = readable_lines(rows, reader_id=READER_ID, max_chars=400)
    assert lines.other_skipped > 0 and lines.truncated > 0
    assert {line.speaker for line in lines.lines} == {"reader", "P1", "P2", "P3"}

    async def run(stage, n, call):
        return await call()

    provider = LocalProvider(workers=1, points=8, executor="process")
    try:
        line_by_line = await summarize_all(provider, lines.lines, budget=4000, language=None,
                                           run=run, concurrency=2)
        whole = await provider.summarize_window(rows, window)
    finally:
        await provider.close()
    assert line_by_line.chunks > 2 and line_by_line.merges >= 1
    assert whole.summary.text == line_by_line.summary.text
    assert whole.summary.cited == line_by_line.summary.cited
    assert (whole.messages_read, whole.other_skipped, whole.truncated, whole.chunks,
            whole.clipped) == (len(lines.lines), lines.other_skipped, lines.truncated,
                               line_by_line.chunks, line_by_line.clipped)
    # the calls it made, for the audit: one map over every line, then the merges
    assert [c.stage for c in whole.calls] == ["map"] + ["reduce"] * (len(whole.calls) - 1)
    assert whole.calls[0].message_count == len(lines.lines)
    assert sum(c.usage.input_tokens for c in whole.calls) > 0


class RecordingWindowProvider:
    """A whole-window provider that keeps the bytes of every window it is given."""

    name, model = "recording", "recorder-1"

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def summarize_window(self, rows: Sequence[tuple[int, str, str, str | None]],
                               window: Window) -> WindowSummary:
        self.received.append(pickle.dumps((list(rows), window)))
        seqs = tuple(r[0] for r in rows if r[3])
        calls = (Call("map", len(seqs), Usage(7, 3), 1), Call("reduce", 2, Usage(2, 1), 1))
        return WindowSummary(Summary(f"{len(seqs)} read", seqs[-2:]), len(seqs), 0, 0, 2, 0,
                             calls)


async def test_a_window_provider_never_receives_an_encrypted_message(ai_client):
    client = await ai_client()
    room = await make_room(client, 2)
    texts, encrypted = await seed(room)
    carol = room.members[1]
    await opt_in(client, carol)
    service = client.server.app[KERNEL].state["ai"]
    recorder = RecordingWindowProvider()
    service.provider = recorder
    r = await post(room, carol, "summary")
    assert r.status == 200, await r.text()
    out = await r.json()
    assert out["provider"] == "recording" and out["encrypted_skipped"] == len(encrypted) == 3
    assert out["messages_read"] == len(TALK) and out["summary"] == f"{len(TALK)} read"
    assert out["chunks"] == 2
    (sent,) = recorder.received
    rows, window = pickle.loads(sent)
    assert SECRET.encode() not in sent and not {r[0] for r in rows} & encrypted
    assert {r[0] for r in rows} == set(texts) and window.reader_id == carol.user_id
    # one audit row per call the provider reported, with its counts
    audit = await service.store.audit_rows(carol.user_id)
    assert sorted((a["stage"], a["message_count"], a["input_tokens"], a["status"])
                  for a in audit) == [("map", len(TALK), 7, "ok"), ("reduce", 2, 2, "ok")]
