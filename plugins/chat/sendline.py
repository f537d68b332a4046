"""The per-conversation send line: places taken synchronously in arrival order and
served in that order.

Contract: a :class:`Ticket` is taken with :meth:`OrderedLines.reserve` when a request
arrives and is **always** closed (``close()`` or leaving ``async with``) on every path —
success, error, cancellation — or the line stops for everyone behind it. A ticket
completes its two steps (submitted, done) never before the tickets ahead of it. The
line is bounded by the keys with work in flight: a finished line is dropped.
Tested in ``tests/plugins/chat/test_send_line.py``.
"""

from __future__ import annotations

import asyncio


class Ticket:
    """A place in a key's line, in two steps. ``await ticket.submit_turn()`` waits until
    every earlier ticket of the key has *submitted* its work (:meth:`submitted`);
    ``async with ticket:`` waits until every earlier ticket is *done*. Leaving (or
    :meth:`close`, for work that failed early) completes both steps for this ticket —
    never before the earlier tickets completed them."""

    __slots__ = ("_done", "_key", "_line", "_prev", "_submitted")

    def __init__(self, line: OrderedLines, key: str, prev: Ticket | None) -> None:
        loop = asyncio.get_running_loop()
        self._line, self._key, self._prev = line, key, prev
        self._submitted: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()

    async def submit_turn(self) -> None:
        prev = self._prev
        if prev is not None and not prev._submitted.done():
            # shielded: a cancelled waiter must not cancel its predecessor's future
            await asyncio.shield(prev._submitted)

    def submitted(self) -> None:
        """This ticket's work is submitted (call after :meth:`submit_turn`)."""
        if not self._submitted.done():
            self._submitted.set_result(None)

    async def turn(self) -> None:
        """Wait until every earlier ticket of the key is done."""
        prev = self._prev
        if prev is not None and not prev._done.done():
            await asyncio.shield(prev._done)

    async def __aenter__(self) -> Ticket:
        await self.turn()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._done.done():
            return
        prev = self._prev
        if prev is None:
            self._finish()
            return
        if prev._submitted.done():
            self.submitted()
        else:
            prev._submitted.add_done_callback(lambda _: self.submitted())
        if prev._done.done():
            self._finish()
        else:
            prev._done.add_done_callback(lambda _: self._finish())

    def _finish(self) -> None:
        self.submitted()
        if not self._done.done():
            self._done.set_result(None)
        self._prev = None  # a finished line keeps no chain of tickets alive
        self._line._done(self._key, self)


class OrderedLines:
    """One FIFO line per key (a conversation): places are taken synchronously, in the
    order requests arrive, and served in that order. Bounded by the keys with work in
    flight (a finished line is dropped)."""

    def __init__(self) -> None:
        self._tails: dict[str, Ticket] = {}

    def reserve(self, key: str) -> Ticket:
        ticket = Ticket(self, key, self._tails.get(key))
        self._tails[key] = ticket
        return ticket

    def _done(self, key: str, ticket: Ticket) -> None:
        if self._tails.get(key) is ticket:
            del self._tails[key]

    def __len__(self) -> int:
        return len(self._tails)
