"""Conversation activity (newest seq and time, the senders' read markers), written
off the send path and coalesced.

Every send moves its conversation's ``last_seq``/``last_message_at`` and the sender's
read marker. Writing that in each send would add a transaction to every message; here
sends only *note* it, and one owned task writes what accumulated (under load, many
messages per conversation become one write). The first note after a quiet spell is
written at once; under load at most one write per ``interval`` seconds
(``chat.activity_flush_interval``), every conversation in one transaction. Reads that
show activity (conversation list, unread counts) call :meth:`ActivityRecorder.flush`
first, so a client never sees its own send missing; other instances see it within
about ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from .conversations import Activity, ConversationRepository

log = logging.getLogger(__name__)


class ActivityRecorder:
    #: seconds :meth:`close` gives the last write
    CLOSE_TIMEOUT = 5.0

    def __init__(self, repo: ConversationRepository, interval: float = 0.0) -> None:
        self.repo = repo
        self.interval = interval
        self._pending: dict[str, Activity] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the writer and write what is pending, within :attr:`CLOSE_TIMEOUT`; a
        failure (the database down at shutdown) is logged once and never raised: the
        shutdown goes on, and those markers catch up with the conversations' next
        messages."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if not self._pending:
            return
        try:
            async with asyncio.timeout(self.CLOSE_TIMEOUT):
                await self.flush()
        except Exception as exc:
            log.warning("conversation activity of %d conversation(s) not written at "
                        "shutdown (%s)", len(self._pending), type(exc).__name__)

    def note(
        self, conversation_id: str, *, seq: int, at: datetime, sender_id: str, message_id: str
    ) -> None:
        entry = self._pending.get(conversation_id)
        if entry is None:
            entry = self._pending[conversation_id] = Activity(seq, at)
        elif seq > entry.seq:
            entry.seq, entry.at = seq, at
        mine = entry.senders.get(sender_id)
        if mine is None or seq > mine[0]:
            entry.senders[sender_id] = (seq, message_id)
        self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, {}
            try:
                await self.repo.record_activity(batch)
            except BaseException:
                # keep what was not written for the next flush
                for cid, rest in batch.items():
                    self._merge(cid, rest)
                raise

    def _merge(self, conversation_id: str, entry: Activity) -> None:
        for sender_id, (seq, message_id) in entry.senders.items():
            self.note(
                conversation_id,
                seq=seq,
                at=entry.at,
                sender_id=sender_id,
                message_id=message_id,
            )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("writing conversation activity failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if self.interval:
                await asyncio.sleep(self.interval)  # what arrives meanwhile waits for one write
