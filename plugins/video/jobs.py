"""The stale-call reaper ``video.reap``: the backstop that ends calls no instance's
timer will end (the instance that held the timer died, a client vanished).

Per run: live calls past their ring timeout (→ ``missed``), joined participants gone
past the reconnect grace or unseen for ``stale_after`` (→ ``call.left``; the call ends
as ``stale`` when nobody connected remains), calls older than ``max_call_duration``
(→ ``stale``). Idempotent: every step re-checks its condition under the call's lock.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import exists, or_, select

from secureconnect.jobs import Job
from secureconnect.models import utcnow

from .models import call_participants as cp
from .models import calls

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

    from .service import CallService

log = logging.getLogger(__name__)

REAP_JOB = "video.reap"
STATE_KEY = "video"


async def due_calls(service: CallService) -> tuple[list[str], list[str], list[str]]:
    """Ids of live calls past their ring timeout, with departed participants, and
    older than ``max_call_duration`` (each list at most ``reaper_batch_size``)."""
    now = utcnow()
    batch = service.settings.reaper_batch_size
    grace_cut = now - timedelta(seconds=service.settings.reconnect_grace)
    seen_cut = now - timedelta(seconds=service.settings.stale_after)
    old_cut = now - timedelta(seconds=service.settings.max_call_duration)
    invited = exists().where(cp.c.call_id == calls.c.id, cp.c.status == "invited")
    async with service.kernel.db.connect() as c:
        ringing = (await c.scalars(select(calls.c.id).where(
            calls.c.status != "ended", calls.c.ring_deadline <= now,
            or_(calls.c.status == "ringing", invited)).limit(batch))).all()
        departed = (await c.scalars(select(cp.c.call_id).distinct().where(
            cp.c.status == "joined",
            or_(cp.c.gone_since <= grace_cut, cp.c.seen_at.is_(None),
                cp.c.seen_at <= seen_cut)).limit(batch))).all()
        old = (await c.scalars(select(calls.c.id).where(
            calls.c.status != "ended", calls.c.created_at <= old_cut).limit(batch))).all()
    return [str(i) for i in ringing], [str(i) for i in departed], [str(i) for i in old]


async def reap_stale_calls(kernel: Kernel) -> int:
    service: CallService = kernel.state[STATE_KEY].service
    m = service.metrics
    started = time.perf_counter()
    ended = 0
    try:
        ringing, departed, old = await due_calls(service)
        for check, ids in ((service.expire_ringing, ringing),
                           (service.expire_departed, departed),
                           (service.expire_old, old)):
            for call_id in ids:
                try:
                    if await check(call_id):
                        ended += 1
                        m.cleanup_stale.inc()
                except Exception:
                    m.cleanup_failed.inc()
                    log.exception("video: the reaper could not clean call %s", call_id)
    except Exception:
        m.cleanup_failed.inc()
        raise
    finally:
        m.cleanup_duration.observe(time.perf_counter() - started)
    if ended:
        log.info("video: the reaper ended %d stale call(s)", ended)
    return ended


def reap_job(interval: float) -> Job:
    # Runs at start-up too: calls left behind while no instance ran end promptly.
    return Job(REAP_JOB, interval, reap_stale_calls, run_at_start=True)
