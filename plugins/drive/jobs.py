"""The cleanup job ``drive.cleanup``: nothing abandoned keeps quota or storage.

1. Pending reservations past ``expires_at`` (never completed): row deleted, quota
   released (once, by the deleting statement), object deleted, S3 multipart aborted.
2. S3 multipart uploads no pending file claims (older than ``orphan_grace``): aborted,
   so their parts stop costing (ocis#4968).
3. Stored objects without a file row (older than ``orphan_grace``; e.g. a delete whose
   storage call failed, or a PUT to an expired reservation): deleted.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from secureconnect.jobs import Job

from .models import files, utcnow
from .runtime import STATE_KEY

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

    from .service import DriveService

log = logging.getLogger(__name__)

CLEANUP_JOB = "drive.cleanup"


async def expire_reservations(drive: DriveService) -> int:
    async with drive.kernel.db.session() as s:
        rows = (await s.execute(
            select(files).where(files.c.status == "pending", files.c.expires_at < utcnow())
            .order_by(files.c.expires_at).limit(drive.s.cleanup_batch_size))).all()
    done = 0
    for row in rows:
        if await drive.discard(row, status="expired"):
            done += 1
            drive.metrics.cleanup_reservations.inc()
    return done


async def abort_abandoned_multiparts(drive: DriveService) -> int:
    if not drive.storage.supports_multipart:
        return 0
    cutoff = time.time() - drive.s.orphan_grace
    pending = [u for u in await drive.storage.pending_multiparts()
               if u.initiated.timestamp() <= cutoff]
    if not pending:
        return 0
    async with drive.kernel.db.session() as s:
        claimed = set((await s.execute(select(files.c.multipart_id).where(
            files.c.status == "pending", files.c.multipart_id.is_not(None)))).scalars())
    done = 0
    for upload in pending:
        if upload.upload_id in claimed:
            continue
        await drive.storage.abort_multipart(upload.file_id, upload.upload_id)
        drive.metrics.cleanup_multipart.inc()
        done += 1
    return done


def _is_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


async def sweep_orphans(drive: DriveService) -> int:
    cutoff = datetime.fromtimestamp(time.time() - drive.s.orphan_grace, UTC)
    candidates: list[str] = []
    done = 0
    temp_age = drive.s.orphan_grace + drive.s.upload_idle_timeout
    local = getattr(drive.storage, "remove_temp", None)
    async for name, modified in drive.storage.keys():
        if name.endswith(".part"):
            if local is not None and local(name, temp_age):
                done += 1
            continue
        if _is_id(name) and modified <= cutoff:
            candidates.append(name)
    for start in range(0, len(candidates), 500):
        batch = candidates[start:start + 500]
        async with drive.kernel.db.session() as s:
            known = set((await s.execute(
                select(files.c.id).where(files.c.id.in_(batch)))).scalars())
        for name in batch:
            if name not in known:
                await drive.storage.delete(name)
                drive.metrics.cleanup_orphans.inc()
                done += 1
    return done


async def cleanup(kernel: Kernel) -> int:
    drive: DriveService = kernel.state[STATE_KEY].drive
    start = time.perf_counter()
    try:
        expired = await expire_reservations(drive)
        aborted = await abort_abandoned_multiparts(drive)
        orphans = await sweep_orphans(drive)
    finally:
        drive.metrics.cleanup_duration.observe(time.perf_counter() - start)
    if expired or aborted or orphans:
        log.info("drive cleanup: %d reservations expired, %d multipart uploads aborted, "
                 "%d orphan objects deleted", expired, aborted, orphans)
    return expired + aborted + orphans


def cleanup_job(interval: float) -> Job:
    return Job(CLEANUP_JOB, interval, cleanup, run_at_start=True)
