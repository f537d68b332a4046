"""The storage contract both back ends keep.

* Objects are addressed by the file id only (a UUID the server made); no name a client
  sent ever becomes a path or a key.
* ``upload_url`` / ``download_url`` return absolute URLs a plain HTTP client follows
  without our access token, valid until ``expires`` (Unix seconds).
* ``size`` returns the size of what is really stored (``None`` when nothing is): the
  service verifies every upload with it, because neither a presigned S3 PUT nor moto
  caps the size (aws-sdk-js#1252).
* Multipart (S3 only, ``supports_multipart``): parts are uploaded through presigned
  part URLs; ``list_parts`` tells a client where to resume; ``complete_multipart``
  assembles every uploaded part in order; ``abort_multipart`` frees them.
* ``busy`` tells whether this process is still receiving the object (local PUT).
* ``keys`` lists stored objects with their age for the orphan sweep.
* Errors of an unreachable store surface as 503 problems (``ServiceUnavailable``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class StoredPart:
    part_number: int
    size: int
    etag: str


@dataclass(frozen=True)
class PendingMultipart:
    file_id: str
    upload_id: str
    initiated: datetime


class Storage(Protocol):
    name: str
    supports_multipart: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the store cannot serve (readiness check)."""
        ...

    async def upload_url(self, file_id: str, size: int, content_type: str, expires: int) -> str: ...

    async def download_url(
        self, file_id: str, disposition: str, content_type: str, expires: int
    ) -> str: ...

    def busy(self, file_id: str) -> bool: ...

    async def size(self, file_id: str) -> int | None: ...

    async def head_bytes(self, file_id: str, n: int) -> bytes: ...

    async def sha256(self, file_id: str) -> str: ...

    async def delete(self, file_id: str) -> None: ...

    def keys(self) -> AsyncIterator[tuple[str, datetime]]: ...

    async def create_multipart(self, file_id: str, content_type: str) -> str: ...

    async def part_url(
        self, file_id: str, upload_id: str, part_number: int, expires: int
    ) -> str: ...

    async def list_parts(self, file_id: str, upload_id: str) -> list[StoredPart]: ...

    async def complete_multipart(self, file_id: str, upload_id: str) -> None: ...

    async def abort_multipart(self, file_id: str, upload_id: str) -> None: ...

    async def pending_multiparts(self) -> list[PendingMultipart]: ...
