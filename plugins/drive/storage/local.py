"""Local directory back end: objects on disk, reached through HMAC-signed URLs that the
plugin's own routes (``/v1/drive/blobs/{id}``) serve.

Layout: ``<local_dir>/objects/<first two hex digits>/<file id>``. The id is parsed as a
UUID and re-rendered before it becomes a path, so nothing a client sends can steer the
filesystem. Uploads are written to a temporary file beside the target and renamed into
place only when the body fitted the reserved size; tus appends write in place at the
offset the server recorded (anything past it is cut first).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

from secureconnect.errors import Conflict, PayloadTooLarge

from ..signing import signed_query
from .base import PendingMultipart, StoredPart

CHUNK = 256 * 1024


class BodyTooLarge(PayloadTooLarge):
    code = "upload_too_large"


class UploadBusy(Conflict):
    code = "upload_in_progress"


def canonical_id(file_id: str) -> str:
    """The id as a canonical UUID string; ``ValueError`` for anything else."""
    return str(uuid.UUID(file_id))


class LocalStorage:
    name = "local"
    supports_multipart = False

    def __init__(self, root: Path, public_url: str, secret: bytes) -> None:
        self.root = root
        self.objects = root / "objects"
        self.public_url = public_url
        self.secret = secret
        #: ids with a PUT in progress (this back end runs on one instance)
        self._writing: set[str] = set()

    async def start(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        if not os.access(self.objects, os.W_OK | os.X_OK):
            raise OSError(f"drive folder {self.objects} is missing or not writable")

    @staticmethod
    def too_large(max_size: int) -> BodyTooLarge:
        return BodyTooLarge(f"the upload exceeds the reserved size of {max_size} bytes",
                            limit=max_size)

    def path(self, file_id: str) -> Path:
        fid = canonical_id(file_id)
        return self.objects / fid[:2] / fid

    # -- URLs ------------------------------------------------------------------------
    def _url(self, method: str, file_id: str, expires: int, max_size: int,
             extra: dict[str, str] | None = None) -> str:
        query = signed_query(self.secret, method, file_id, expires, max_size, extra)
        return f"{self.public_url}/v1/drive/blobs/{file_id}?{query}"

    async def upload_url(self, file_id: str, size: int, content_type: str, expires: int) -> str:
        return self._url("PUT", file_id, expires, size)

    async def download_url(
        self, file_id: str, disposition: str, content_type: str, expires: int
    ) -> str:
        return self._url("GET", file_id, expires, 0,
                         {"name": disposition, "type": content_type})

    # -- writing -----------------------------------------------------------------------
    def busy(self, file_id: str) -> bool:
        """Is a PUT of this file in progress? ``complete`` waits for it to end, so a
        body renamed into place after verification can never replace a ready file."""
        return file_id in self._writing

    @contextlib.contextmanager
    def claim(self, file_id: str) -> Iterator[None]:
        if file_id in self._writing:
            raise UploadBusy("another upload of this file is in progress")
        self._writing.add(file_id)
        try:
            yield
        finally:
            self._writing.discard(file_id)

    async def write(self, file_id: str, chunks: AsyncIterator[bytes], max_size: int) -> int:
        """Store a whole object from ``chunks``; more than ``max_size`` bytes → 413 and
        nothing is kept (the previous object, if any, stays)."""
        target = self.path(file_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.urandom(6).hex()}.part")
        written = 0
        try:
            with tmp.open("wb") as out:
                async for chunk in chunks:
                    written += len(chunk)
                    if written > max_size:
                        raise self.too_large(max_size)
                    out.write(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return written

    def truncate(self, file_id: str, length: int) -> None:
        path = self.path(file_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.truncate(length)

    async def append(
        self, file_id: str, offset: int, chunks: AsyncIterator[bytes], limit: int,
        hasher: hashlib._Hash | None = None,
    ) -> tuple[int, BaseException | None]:
        """Write ``chunks`` at ``offset`` (cutting anything stored past it) and return
        the bytes written plus the error that stopped the body early, if any: what
        arrived before a dropped connection is kept so the client can resume."""
        path = self.path(file_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        error: BaseException | None = None
        with path.open("r+b" if path.exists() else "w+b") as out:
            out.truncate(offset)
            out.seek(offset)
            try:
                async for chunk in chunks:
                    if written + len(chunk) > limit:
                        chunk = chunk[: limit - written]
                        error = BodyTooLarge("the PATCH body goes past Upload-Length")
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    written += len(chunk)
                    if error is not None:
                        break
            except BaseException as exc:
                # the bytes written so far are kept and recorded by the caller
                error = exc
        return written, error

    # -- reading -----------------------------------------------------------------------
    async def size(self, file_id: str) -> int | None:
        try:
            return self.path(file_id).stat().st_size
        except FileNotFoundError:
            return None

    async def head_bytes(self, file_id: str, n: int) -> bytes:
        with self.path(file_id).open("rb") as f:
            return f.read(n)

    async def sha256(self, file_id: str) -> str:
        def digest() -> str:
            h = hashlib.sha256()
            with self.path(file_id).open("rb") as f:
                while block := f.read(1024 * 1024):
                    h.update(block)
            return h.hexdigest()

        return await asyncio.to_thread(digest)

    async def delete(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)

    async def keys(self) -> AsyncIterator[tuple[str, datetime]]:
        if not self.objects.exists():
            return
        for shard in sorted(self.objects.iterdir()):
            if not shard.is_dir():
                continue
            for entry in sorted(shard.iterdir()):
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                # temporary files of interrupted PUTs come under their own ``*.part`` name
                yield entry.name, datetime.fromtimestamp(mtime, UTC)

    def remove_temp(self, name: str, older_than: float) -> bool:
        """Delete a leftover ``*.part`` temporary file older than ``older_than`` s."""
        fid = name.split(".", 1)[0]
        path = self.path(fid).with_name(name)
        try:
            if time.time() - path.stat().st_mtime < older_than:
                return False
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    # -- multipart: not on the local back end (tus covers resumable uploads) ------------
    async def create_multipart(self, file_id: str, content_type: str) -> str:
        raise NotImplementedError("the local back end resumes uploads with tus")

    async def part_url(self, file_id: str, upload_id: str, part_number: int, expires: int) -> str:
        raise NotImplementedError

    async def list_parts(self, file_id: str, upload_id: str) -> list[StoredPart]:
        raise NotImplementedError

    async def complete_multipart(self, file_id: str, upload_id: str) -> None:
        raise NotImplementedError

    async def abort_multipart(self, file_id: str, upload_id: str) -> None:
        return None

    async def pending_multiparts(self) -> list[PendingMultipart]:
        return []
