"""Drive logic: reserve → upload → complete → download, list, delete, quota, S3 parts.
Never sees an HTTP request.

Invariants
----------
* Quota is reserved before any byte is accepted (:mod:`.quotas`) and released exactly
  once: by the statement that deletes the file row (delete, refused complete, expiry),
  in the same transaction.
* A file is ``ready`` only after the stored object was checked: its size equals the
  reserved size exactly, its SHA-256 equals the declared one (when given), and a
  declared image starts with that image's magic bytes (unless ``is_encrypted``: the
  server never needs plaintext). A failed check deletes the object and the row.
* Someone else's file is 404 (no existence leak) unless it is shared into a
  conversation the reader belongs to — membership is asked live, so a removed
  participant loses access at once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from secureconnect.errors import Conflict, NotFound, PayloadTooLarge, Problem
from secureconnect.models import rfc3339
from secureconnect_plugins.chat.api import CONVERSATIONS, Conversations

from . import quotas
from .metrics import DriveMetrics
from .models import files, new_id, shares, utcnow
from .quotas import QuotaExceeded
from .settings import DriveSettings
from .storage.base import Storage
from .validation import (
    SNIFF_BYTES,
    InvalidFile,
    check_content_type,
    clean_name,
    content_disposition,
    normalise_content_type,
    sniff_matches,
)

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

#: one file row by id, built once: the signed-URL paths read it on every transfer
_FILE_BY_ID = select(files).where(files.c.id == bindparam("file_id"))

S3_MAX_PARTS = 10_000


class FileNotFound(NotFound):
    code = "file_not_found"


class UploadIncomplete(Conflict):
    code = "upload_incomplete"


class UploadMismatch(Problem):
    status, code, title = 422, "upload_mismatch", "Upload Mismatch"


class FileTooLarge(PayloadTooLarge):
    code = "file_too_large"


@dataclass(frozen=True)
class Reservation:
    name: str
    size: int
    content_type: str
    sha256: str | None = None
    is_encrypted: bool = False
    multipart: bool = False


iso = rfc3339


class DriveService:
    def __init__(self, kernel: Kernel, settings: DriveSettings, storage: Storage) -> None:
        self.kernel = kernel
        self.s = settings
        self.storage = storage
        self.metrics = DriveMetrics.build(kernel.metrics)

    @property
    def conversations(self) -> Conversations:
        return self.kernel.require(CONVERSATIONS)

    # -- views ---------------------------------------------------------------------------
    @staticmethod
    def view(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "owner_id": row.owner_id,
            "name": row.name,
            "size": int(row.size),
            "content_type": row.content_type,
            "sha256": row.sha256,
            "is_encrypted": bool(row.is_encrypted),
            "status": row.status,
            "upload": row.upload_kind,
            "created_at": iso(row.created_at),
            "completed_at": iso(row.completed_at),
            "expires_at": iso(row.expires_at) if row.status == "pending" else None,
        }

    # -- reserve -------------------------------------------------------------------------
    def validate(self, r: Reservation) -> Reservation:
        if r.size < 1:
            raise InvalidFile("size", "must be at least 1 byte")
        if r.size > self.s.max_file_size:
            raise FileTooLarge(
                f"a file may have at most {self.s.max_file_size} bytes, got {r.size}",
                limit=self.s.max_file_size)
        content_type = normalise_content_type(r.content_type)
        check_content_type(content_type, self.s.allowed_content_types,
                           self.s.denied_content_types)
        name = clean_name(r.name, self.s.max_name_length)
        sha = r.sha256.lower() if r.sha256 else None
        return Reservation(name, r.size, content_type, sha, r.is_encrypted, r.multipart)

    async def reserve(self, user_id: str, draft: Reservation, *, kind: str | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reserve quota and a file row; returns (file view, upload instructions)."""
        r = self.validate(draft)
        if kind is None:
            if r.multipart and not self.storage.supports_multipart:
                raise InvalidFile("multipart", "this server's storage resumes large uploads "
                                  "with tus at /v1/drive/uploads; leave multipart false")
            kind = "multipart" if r.multipart else "single"
        part_size = self._part_size(r.size) if kind == "multipart" else 0
        file_id = new_id()
        now = utcnow()
        expires_at = now + timedelta(seconds=self.s.reservation_ttl)
        upload: dict[str, Any] = {"upload_url": None, "expires_at": iso(expires_at)}
        if kind == "single":
            # signed before anything is written: a store that is down costs no quota
            url_expiry = min(expires_at, now + timedelta(seconds=self.s.url_ttl))
            upload["upload_url"] = await self.storage.upload_url(
                file_id, r.size, r.content_type, math.ceil(url_expiry.timestamp()))
            upload["expires_at"] = iso(url_expiry)
        elif kind == "multipart":
            upload["multipart"] = {"part_size": part_size,
                                   "part_count": math.ceil(r.size / part_size)}
        upload_id = None
        if kind == "multipart":
            upload_id = await self.storage.create_multipart(file_id, r.content_type)
        try:
            values = dict(
                id=file_id, owner_id=user_id, name=r.name, size=r.size,
                content_type=r.content_type, sha256=r.sha256, is_encrypted=r.is_encrypted,
                status="pending", upload_kind=kind, backend=self.storage.name,
                multipart_id=upload_id, received=0, created_at=now, expires_at=expires_at,
                completed_at=None)
            async with self.kernel.db.session() as s:
                # the file row first: the quota row's lock, which concurrent uploads of
                # the same user queue for, is then held only until the commit
                await s.execute(insert(files).values(**values))
                if not await quotas.reserve(s, user_id, r.size, self.s.default_quota):
                    q = await quotas.read(s, user_id, self.s.default_quota)
                    self.metrics.quota_exceeded.inc()
                    raise QuotaExceeded(
                        f"the upload of {r.size} bytes does not fit your quota "
                        f"({q.used} of {q.limit} bytes used)", used=q.used, limit=q.limit)
        except BaseException:
            if upload_id is not None:
                await self._quietly(self.storage.abort_multipart(file_id, upload_id))
            raise
        self.metrics.uploads.labels("reserved").inc()
        return self.view(SimpleNamespace(**values)), upload

    def _part_size(self, size: int) -> int:
        part = self.s.multipart_part_size
        while math.ceil(size / part) > S3_MAX_PARTS:
            part *= 2
        return part

    # -- S3 multipart parts --------------------------------------------------------------
    async def part_urls(self, user_id: str, file_id: str, numbers: list[int]
                        ) -> dict[str, Any]:
        row = await self._pending_multipart(user_id, file_id)
        count = math.ceil(row.size / self._part_size(row.size))
        bad = [n for n in numbers if not 1 <= n <= count]
        if bad:
            raise InvalidFile("part_numbers", f"parts are numbered 1..{count}; got {bad[:5]}")
        expiry = math.ceil(min(row.expires_at.timestamp(), time.time() + self.s.url_ttl))
        urls = [{"part_number": n,
                 "url": await self.storage.part_url(file_id, row.multipart_id, n, expiry)}
                for n in sorted(set(numbers))]
        return {"parts": urls, "expires_at": iso(datetime.fromtimestamp(expiry, utcnow().tzinfo))}

    async def uploaded_parts(self, user_id: str, file_id: str) -> dict[str, Any]:
        row = await self._pending_multipart(user_id, file_id)
        parts = await self.storage.list_parts(file_id, row.multipart_id)
        return {"part_size": self._part_size(row.size),
                "part_count": math.ceil(row.size / self._part_size(row.size)),
                "parts": [{"part_number": p.part_number, "size": p.size, "etag": p.etag}
                          for p in parts]}

    async def _pending_multipart(self, user_id: str, file_id: str) -> Any:
        row = await self._owned(user_id, file_id)
        if row.upload_kind != "multipart" or row.status != "pending":
            raise Conflict("the file is not a pending multipart upload",
                           code="not_a_multipart_upload")
        return row

    # -- complete ------------------------------------------------------------------------
    async def complete(self, user_id: str, file_id: str) -> dict[str, Any]:
        row = await self._owned(user_id, file_id)
        if row.status == "ready":
            return self.view(row)
        if row.upload_kind == "multipart":
            parts = await self.storage.list_parts(file_id, row.multipart_id)
            if await self.storage.size(file_id) is None:
                if not parts:
                    raise UploadIncomplete("no part has been uploaded yet")
                if sum(p.size for p in parts) < row.size:
                    raise UploadIncomplete(
                        f"the uploaded parts hold {sum(p.size for p in parts)} of "
                        f"{row.size} bytes; upload the missing parts (GET .../parts)")
                await self.storage.complete_multipart(file_id, row.multipart_id)
        elif self.storage.busy(file_id):
            raise UploadIncomplete("the upload is still in progress; complete it afterwards")
        elif row.upload_kind == "tus" and int(row.received) < int(row.size):
            raise UploadIncomplete(
                f"{row.received} of {row.size} bytes received; resume the tus upload")
        stored = await self.storage.size(file_id)
        if stored is None:
            raise UploadIncomplete("nothing has been uploaded yet; PUT the file to upload_url")
        if stored != row.size:
            await self._refuse(row, f"the stored object has {stored} bytes, "
                               f"but {row.size} were reserved", stored=stored)
        if row.sha256:
            digest = await self.storage.sha256(file_id)
            if digest != row.sha256:
                await self._refuse(row, "the stored object's SHA-256 differs from the "
                                   "declared one", sha256=digest)
        if not row.is_encrypted and row.content_type.startswith("image/"):
            head = await self.storage.head_bytes(file_id, SNIFF_BYTES) if row.size else b""
            if not sniff_matches(row.content_type, head):
                await self._refuse(row, f"the content is not a {row.content_type} image",
                                   reason="content_type")
        return await self.mark_ready(row)

    async def mark_ready(self, row: Any) -> dict[str, Any]:
        changes = {"status": "ready", "completed_at": utcnow(), "expires_at": None,
                   "multipart_id": None}
        async with self.kernel.db.session() as s:
            result = await s.execute(
                update(files).where(files.c.id == row.id, files.c.status == "pending")
                .values(**changes))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                # a concurrent complete won (or the file was deleted meanwhile)
                fresh = await self._row(s, row.id)
                if fresh is None:
                    raise FileNotFound("no such file")
                return self.view(fresh)
        self.metrics.uploads.labels("completed").inc()
        self.metrics.bytes_stored.inc(int(row.size))
        return self.view(SimpleNamespace(**{**row._mapping, **changes}))

    async def _refuse(self, row: Any, detail: str, **extra: Any) -> None:
        await self.discard(row, status="mismatch")
        raise UploadMismatch(f"{detail}; the upload was deleted and its quota released",
                             **extra)

    async def discard(self, row: Any, *, status: str) -> bool:
        """Delete a pending file's row (releasing its quota once) and its object."""
        async with self.kernel.db.session() as s:
            gone = await self._delete_row(s, row, only_pending=True)
        if not gone:
            return False  # completed or deleted meanwhile: its object is not ours to drop
        await self._quietly(self.storage.delete(row.id))
        if row.multipart_id:
            await self._quietly(self.storage.abort_multipart(row.id, row.multipart_id))
        self.metrics.uploads.labels(status).inc()
        return True

    async def _delete_row(self, s: AsyncSession, row: Any, *, only_pending: bool) -> bool:
        cond = [files.c.id == row.id]
        if only_pending:
            cond.append(files.c.status == "pending")
        result = await s.execute(delete(files).where(*cond))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        await s.execute(delete(shares).where(shares.c.file_id == row.id))
        await quotas.release(s, row.owner_id, int(row.size))
        return True

    # -- read ----------------------------------------------------------------------------
    async def list(self, user_id: str, limit: int, before: str | None) -> dict[str, Any]:
        limit = max(1, min(limit, self.s.list_max_limit))
        query = select(files).where(files.c.owner_id == user_id)
        if before:
            async with self.kernel.db.session() as s:
                cursor = (await s.execute(select(files.c.created_at).where(
                    files.c.id == before, files.c.owner_id == user_id))).first()
            if cursor is None:
                raise InvalidFile("before", "unknown cursor; pass a file id from this list")
            query = query.where(or_(files.c.created_at < cursor.created_at, and_(
                files.c.created_at == cursor.created_at, files.c.id < before)))
        query = query.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit + 1)
        async with self.kernel.db.session() as s:
            rows = (await s.execute(query)).all()
        items = [self.view(r) for r in rows[:limit]]
        return {"items": items, "next_cursor": items[-1]["id"] if len(rows) > limit else None}

    async def get(self, user_id: str, file_id: str) -> dict[str, Any]:
        return self.view(await self._readable(user_id, file_id))

    async def download(self, user_id: str, file_id: str) -> dict[str, Any]:
        row = await self._readable(user_id, file_id)
        if row.status != "ready":
            raise UploadIncomplete("the file is not complete yet")
        expires = math.ceil(time.time() + self.s.url_ttl)
        disposition = content_disposition(row.name)
        url = await self.storage.download_url(file_id, disposition, row.content_type, expires)
        return {"url": url, "expires_at": iso(datetime.fromtimestamp(expires, utcnow().tzinfo)),
                "content_disposition": disposition}

    async def ready_file(self, file_id: str) -> Any:
        """The ready file row behind a signed download URL (the signature was checked)."""
        row = await self._file(file_id)
        if row is None or row.status != "ready":
            raise FileNotFound("no such file")
        return row

    async def pending_upload(self, file_id: str, signed_size: int) -> Any:
        """The pending single-PUT file behind a signed upload URL; a completed (or
        deleted) file cannot be overwritten through an old URL."""
        row = await self._file(file_id)
        if row is None or row.upload_kind != "single" or int(row.size) != signed_size:
            raise FileNotFound("no such upload")
        if row.status != "pending":
            raise Conflict("the upload is already complete", code="upload_complete")
        return row

    async def quota(self, user_id: str) -> dict[str, int]:
        async with self.kernel.db.session() as s:
            q = await quotas.read(s, user_id, self.s.default_quota)
        return {"used": q.used, "limit": q.limit}

    async def set_quota(self, user_id: str, limit: int | None) -> dict[str, int]:
        async with self.kernel.db.session() as s:
            await quotas.set_limit(s, user_id, limit)
        return await self.quota(user_id)

    # -- delete --------------------------------------------------------------------------
    async def delete(self, user_id: str, file_id: str) -> None:
        row = await self._owned(user_id, file_id)
        async with self.kernel.db.session() as s:
            gone = await self._delete_row(s, row, only_pending=False)
        if not gone:
            raise FileNotFound("no such file")
        if row.status == "ready":
            self.metrics.bytes_stored.dec(int(row.size))
        self.metrics.uploads.labels("deleted").inc()
        # A failed storage delete leaves an orphan for the sweep, never a lost quota.
        await self._quietly(self.storage.delete(file_id))
        if row.multipart_id:
            await self._quietly(self.storage.abort_multipart(file_id, row.multipart_id))

    async def delete_all_of(self, user_id: str) -> int:
        """Every file of a deleted account: rows, shares and quota row go; objects are
        deleted (a failed delete leaves an orphan for the sweep). Returns the count."""
        async with self.kernel.db.session() as s:
            rows = (await s.execute(select(files).where(files.c.owner_id == user_id))).all()
        removed = 0
        for row in rows:
            async with self.kernel.db.session() as s:
                gone = await self._delete_row(s, row, only_pending=False)
            if not gone:
                continue  # deleted meanwhile
            removed += 1
            if row.status == "ready":
                self.metrics.bytes_stored.dec(int(row.size))
            self.metrics.uploads.labels("deleted").inc()
            await self._quietly(self.storage.delete(row.id))
            if row.multipart_id:
                await self._quietly(self.storage.abort_multipart(row.id, row.multipart_id))
        async with self.kernel.db.session() as s:
            await quotas.forget(s, user_id)
        return removed

    # -- access --------------------------------------------------------------------------
    async def _row(self, s: AsyncSession, file_id: str) -> Any:
        return (await s.execute(select(files).where(files.c.id == file_id))).first()

    async def _file(self, file_id: str) -> Any:
        """One small indexed read, on the database's fast read path."""
        return await self.kernel.db.fetch_one(_FILE_BY_ID, {"file_id": file_id})

    async def _owned(self, user_id: str, file_id: str) -> Any:
        row = await self._file(file_id)
        if row is None or row.owner_id != user_id:
            raise FileNotFound("no such file")
        return row

    async def _readable(self, user_id: str, file_id: str) -> Any:
        async with self.kernel.db.session() as s:
            row = await self._row(s, file_id)
            if row is None:
                raise FileNotFound("no such file")
            if row.owner_id == user_id:
                return row
            shared = (await s.execute(select(shares.c.conversation_id, shares.c.shared_by)
                                      .where(shares.c.file_id == file_id))).all()
        if row.status == "ready":
            conversations = self.conversations
            for conversation_id, sharer in shared:
                # a share counts only while its sharer is still a participant too: the
                # share rows leave with the sharer, but through an announcement that runs
                # after the removal's answer — membership is the check without a window
                if await conversations.is_participant(conversation_id, user_id) and \
                        await conversations.is_participant(conversation_id, sharer):
                    return row
        raise FileNotFound("no such file")

    async def sync_bytes_gauge(self) -> None:
        async with self.kernel.db.session() as s:
            total = (await s.execute(select(func.coalesce(func.sum(files.c.size), 0)).where(
                files.c.status == "ready"))).scalar_one()
        self.metrics.bytes_stored.set(int(total))

    async def _quietly(self, call: Any) -> None:
        try:
            await call
        except Exception as exc:
            log.warning("drive: storage clean-up failed (%s); the cleanup job retries",
                        type(exc).__name__)
