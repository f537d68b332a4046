"""Which joined participants still have a socket, across instances (reconnect grace).

* Each instance counts its own sockets per user (``sc_ws_connected`` /
  ``sc_ws_disconnected``).
* A socket opening marks the user's joined participations seen (``seen_at = now``,
  ``gone_since = NULL``): a participant who comes back on *any* instance within the
  grace keeps their place.
* The user's last socket on an instance closing sets ``gone_since`` and arms a timer
  for ``reconnect_grace`` seconds; when it fires, participants still gone leave
  (``call.left``, reason ``disconnected``).
* Every ``heartbeat_interval`` seconds an instance marks seen the joined participants
  that have a socket on it, which clears a ``gone_since`` set by another instance
  whose socket of the same user closed. A participant not seen for
  ``reconnect_grace + 2 * heartbeat_interval`` (its instance died) is removed by the
  reaper (:mod:`.jobs`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from secureconnect.errors import ServiceUnavailable
from secureconnect.models import utcnow

from .models import call_participants as cp

if TYPE_CHECKING:
    from .service import CallService

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, service: CallService) -> None:
        self.service = service
        self.local: Counter[str] = Counter()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._heartbeat())

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def connected(self, user_id: str) -> None:
        self.local[user_id] += 1
        # off the connect path: a socket's upgrade never waits for the database
        self.service.spawn(self._back(user_id))

    async def _back(self, user_id: str) -> None:
        if self.local[user_id] > 0 and await self.users_in_calls([user_id]):
            await self._seen([user_id])

    async def disconnected(self, user_id: str) -> None:
        self.local[user_id] -= 1
        if self.local[user_id] > 0:
            return
        del self.local[user_id]
        await self._start_grace(user_id)

    async def _seen(self, user_ids: list[str]) -> None:
        """Mark these users connected; one whose last socket here closed meanwhile is
        marked gone again after the write (the "seen" write, begun while the socket
        was open, may land after the disconnect's "gone" and would otherwise keep a
        departed participant in the call until the stale reaper)."""
        await self.mark_seen(user_ids)
        for user_id in user_ids:
            if self.local[user_id] <= 0:
                await self._start_grace(user_id)

    async def _start_grace(self, user_id: str) -> None:
        call_ids = await self.mark_gone(user_id)
        grace = self.service.settings.reconnect_grace
        for call_id in call_ids:
            self.service.schedule(
                ("grace", f"{call_id}:{user_id}"), grace + 0.05,
                lambda call_id=call_id: self.service.expire_departed(call_id))

    async def _heartbeat(self) -> None:
        interval = self.service.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
            except (ServiceUnavailable, OSError) as exc:
                log.warning("video: presence heartbeat failed: %s", exc)
            except Exception:
                log.exception("video: presence heartbeat failed")

    async def beat(self) -> Any:
        users = [u for u, n in self.local.items() if n > 0]
        in_calls = await self.users_in_calls(users)
        if in_calls:
            await self._seen(in_calls)
        return len(in_calls)

    # -- the shared tables --------------------------------------------------------------
    async def joined_calls_of(self, user_id: str) -> list[str]:
        async with self.service.kernel.db.connect() as c:
            rows = (await c.scalars(select(cp.c.call_id).where(
                cp.c.user_id == user_id, cp.c.status == "joined"))).all()
        return [str(r) for r in rows]

    async def mark_seen(self, user_ids: Sequence[str]) -> None:
        """These users have a socket here: they are connected participants."""
        now = utcnow()
        for i in range(0, len(user_ids), 500):
            chunk = list(user_ids[i:i + 500])
            async with self.service.kernel.db.session() as s:
                await s.execute(update(cp).where(
                    cp.c.user_id.in_(chunk), cp.c.status == "joined"
                ).values(seen_at=now, gone_since=None))

    async def mark_gone(self, user_id: str) -> list[str]:
        """The user's last socket on this instance closed: start their grace."""
        now = utcnow()
        async with self.service.kernel.db.session() as s:
            await s.execute(update(cp).where(
                cp.c.user_id == user_id, cp.c.status == "joined", cp.c.gone_since.is_(None)
            ).values(gone_since=now))
        return await self.joined_calls_of(user_id)

    async def users_in_calls(self, candidates: Sequence[str]) -> list[str]:
        if not candidates:
            return []
        out: list[str] = []
        async with self.service.kernel.db.connect() as c:
            for i in range(0, len(candidates), 500):
                chunk = list(candidates[i:i + 500])
                out += [str(u) for u in (await c.scalars(select(cp.c.user_id).distinct().where(
                    cp.c.user_id.in_(chunk), cp.c.status == "joined"))).all()]
        return out
