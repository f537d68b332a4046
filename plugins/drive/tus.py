"""The tus 1.0 resumable upload server (core, creation, expiration, termination,
checksum) on the local back end: https://tus.io/protocols/resumable-upload

An upload is a drive file with ``upload_kind = "tus"``: creating it reserves the quota
like any reservation; ``received`` is the offset the server acknowledges. When the last
byte arrives the file is verified and becomes ``ready`` as on ``complete``.

Concurrency: one PATCH per upload at a time. A per-upload lock is taken with a timeout
(``upload_lock_timeout`` → 423), and every body read has an idle timeout
(``upload_idle_timeout``), so a stalled client can never hold the lock for ever (the
permanent-409 trap of tusdotnet#201). The offset is then advanced with a conditional
``UPDATE ... WHERE received = :old``, so even writers the lock does not see cannot both
succeed. What arrived before a dropped connection is kept: the client asks ``HEAD``
for the offset and resumes from there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from secureconnect.errors import BadRequest, Conflict, Problem

from .models import files
from .service import DriveService, FileNotFound, Reservation
from .storage.local import LocalStorage

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,expiration,termination,checksum"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}


class UploadLocked(Problem):
    status, code, title = 423, "upload_locked", "Locked"


class UploadInterrupted(Problem):
    """The body stopped early (client gone, or stalled past the idle timeout); what
    arrived is kept and the client resumes from ``HEAD``'s offset."""

    status, code, title = 400, "upload_interrupted", "Bad Request"

    def __init__(self, cause: BaseException) -> None:
        stalled = isinstance(cause, TimeoutError)
        super().__init__("the upload body stalled past the idle timeout" if stalled
                         else "the upload body ended early", status=408 if stalled else 400)


class UploadGone(Problem):
    status, code, title = 410, "upload_expired", "Gone"


class ChecksumMismatch(Problem):
    status, code, title = 460, "checksum_mismatch", "Checksum Mismatch"


@dataclass(frozen=True)
class UploadState:
    id: str
    offset: int
    length: int
    expires_at: str | None
    file: dict[str, Any]


def parse_metadata(header: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not base64 UTF-8",
                             code="invalid_upload_metadata") from None
    return out


def parse_checksum(header: str) -> tuple[str, Any, bytes]:
    algorithm, _, value = header.strip().partition(" ")
    factory = CHECKSUMS.get(algorithm.lower())
    if factory is None:
        raise BadRequest(f"checksum algorithm {algorithm!r} is not supported; use one of "
                         f"{', '.join(CHECKSUMS)}", code="unsupported_checksum")
    try:
        return algorithm.lower(), factory(), base64.b64decode(value, validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum is not base64", code="invalid_checksum") from None


class TusUploads:
    def __init__(self, drive: DriveService, storage: LocalStorage) -> None:
        self.drive = drive
        self.storage = storage
        self.lock_timeout = drive.s.upload_lock_timeout
        self._locks: dict[str, asyncio.Lock] = {}

    async def create(self, user_id: str, length: int, metadata: dict[str, str]) -> UploadState:
        draft = Reservation(
            name=metadata.get("filename") or metadata.get("name") or "upload",
            size=length,
            content_type=metadata.get("filetype") or metadata.get("content_type")
            or "application/octet-stream",
            sha256=metadata.get("sha256") or None,
            is_encrypted=metadata.get("is_encrypted", "").lower() in ("1", "true", "yes"),
        )
        view, _ = await self.drive.reserve(user_id, draft, kind="tus")
        self.storage.truncate(view["id"], 0)
        return UploadState(view["id"], 0, length, view["expires_at"], view)

    async def state(self, user_id: str, upload_id: str) -> UploadState:
        row = await self.drive._owned(user_id, upload_id)
        if row.upload_kind != "tus":
            raise FileNotFound("no such upload")
        view = self.drive.view(row)
        offset = int(row.size) if row.status == "ready" else int(row.received)
        return UploadState(row.id, offset, int(row.size), view["expires_at"], view)

    async def patch(self, user_id: str, upload_id: str, offset: int,
                    chunks: AsyncIterator[bytes], checksum: str | None) -> UploadState:
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        try:
            async with asyncio.timeout(self.lock_timeout):
                await lock.acquire()
        except TimeoutError:
            raise UploadLocked("another PATCH of this upload is in progress; retry with "
                               "HEAD to learn the offset", headers={"Retry-After": "1"}
                               ) from None
        try:
            return await self._patch(user_id, upload_id, offset, chunks, checksum)
        finally:
            lock.release()
            if not lock.locked() and self._locks.get(upload_id) is lock:
                del self._locks[upload_id]

    async def _patch(self, user_id: str, upload_id: str, offset: int,
                     chunks: AsyncIterator[bytes], checksum: str | None) -> UploadState:
        row = await self.drive._owned(user_id, upload_id)
        if row.upload_kind != "tus":
            raise FileNotFound("no such upload")
        if row.status == "ready":
            raise Conflict("the upload is already complete", code="upload_complete",
                           offset=int(row.size))
        if row.expires_at is not None and row.expires_at.timestamp() < time.time():
            raise UploadGone("the upload expired; start a new one")
        if offset != int(row.received):
            raise Conflict(f"Upload-Offset {offset} does not match the server's offset "
                           f"{row.received}; HEAD the upload and resume from there",
                           code="offset_mismatch", offset=int(row.received))
        expected: bytes | None = None
        hasher = None
        if checksum:
            _, hasher, expected = parse_checksum(checksum)
        remaining = int(row.size) - offset
        written, error = await self.storage.append(upload_id, offset, chunks, remaining, hasher)
        if error is None and hasher is not None and hasher.digest() != expected:
            self.storage.truncate(upload_id, offset)
            raise ChecksumMismatch("the chunk's checksum does not match; it was discarded")
        new_offset = offset + written
        # shielded: a dropped client must not lose the record of what it did send
        await asyncio.shield(self._advance(upload_id, offset, new_offset))
        if error is not None:
            if isinstance(error, Problem | asyncio.CancelledError):
                raise error
            raise UploadInterrupted(error) from error
        if new_offset == int(row.size):
            view = await self.drive.complete(user_id, upload_id)
            return UploadState(upload_id, new_offset, int(row.size), None, view)
        view = self.drive.view(row)
        return UploadState(upload_id, new_offset, int(row.size), view["expires_at"], view)

    async def _advance(self, upload_id: str, old: int, new: int) -> None:
        async with self.drive.kernel.db.session() as s:
            result = await s.execute(update(files).where(
                files.c.id == upload_id, files.c.received == old, files.c.status == "pending"
            ).values(received=new))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("the upload changed meanwhile; HEAD it and resume",
                           code="offset_mismatch")

    async def terminate(self, user_id: str, upload_id: str) -> None:
        row = await self.drive._owned(user_id, upload_id)
        if row.upload_kind != "tus":
            raise FileNotFound("no such upload")
        if row.status == "ready":
            await self.drive.delete(user_id, upload_id)
            return
        await self.drive.discard(row, status="terminated")
