"""S3-compatible back end (AWS, MinIO; moto_server in tests) through aiobotocore.

Every network call goes through :meth:`S3Storage._call`: bounded by ``s3_timeout``
(``s3_long_timeout`` for calls that grow with the object: assembling a multipart
upload, reading an object to hash it),
retried on transport errors and 5xx answers (``s3_retry_attempts``, with backoff that
never outlives the timeout), and run inside ``kernel.breaker("s3")`` so an unreachable
store fails requests fast with 503 instead of tying them up. botocore's own retries are
off: one retry policy, ours. Presigning is local computation and needs no call.

Keys: ``<s3_prefix><file id>``; the orphan sweep lists only that prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from secureconnect.errors import Conflict, ServiceUnavailable
from secureconnect.resilience import CircuitOpenError, retry

from .base import PendingMultipart, StoredPart

if TYPE_CHECKING:
    from secureconnect.resilience import CircuitBreaker

    from ..settings import DriveSettings

T = TypeVar("T")

_TRANSPORT = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
              ConnectionClosedError, TimeoutError, OSError)


class S3Unavailable(ServiceUnavailable):
    code = "storage_unavailable"


class PartsRejected(Conflict):
    code = "upload_incomplete"


_BAD_PARTS = frozenset({"EntityTooSmall", "InvalidPart", "InvalidPartOrder"})


class _Transient(Exception):
    """A 5xx answer: worth another try."""


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Storage:
    name = "s3"
    supports_multipart = True

    def __init__(self, settings: DriveSettings, breaker: CircuitBreaker) -> None:
        self.s = settings
        self.breaker = breaker
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        s = self.s
        config = AioConfig(
            connect_timeout=s.s3_timeout, read_timeout=max(s.s3_timeout, s.s3_long_timeout),
            retries={"max_attempts": 1, "mode": "standard"},
            signature_version="s3v4", s3={"addressing_style": "path"},
        )
        kwargs: dict[str, Any] = {"region_name": s.s3_region, "config": config}
        if s.s3_endpoint_url:
            kwargs["endpoint_url"] = s.s3_endpoint_url
        if s.s3_access_key_id:
            kwargs["aws_access_key_id"] = s.s3_access_key_id
            kwargs["aws_secret_access_key"] = s.s3_secret_access_key
        session = get_session()
        self._client = await self._stack.enter_async_context(session.create_client("s3", **kwargs))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def ping(self) -> None:
        await self._op("HeadBucket", "head_bucket", Bucket=self.bucket)

    def busy(self, file_id: str) -> bool:
        return False  # uploads go to S3 directly; complete verifies what is there

    def key(self, file_id: str) -> str:
        return f"{self.prefix}{file_id}"

    # -- the one way calls reach S3 ------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], *, long: bool = False) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.s.s3_long_timeout if long else self.s.s3_timeout)

        async def attempt() -> T:
            try:
                async with asyncio.timeout(max(0.05, deadline - loop.time())):
                    return await fn()
            except ClientError as exc:
                if _status(exc) >= 500:
                    raise _Transient(f"{what}: HTTP {_status(exc)}") from exc
                raise

        async with self.breaker:
            try:
                return await retry(attempt, retry_on=(*_TRANSPORT, _Transient),
                                   attempts=self.s.s3_retry_attempts, deadline=deadline)
            except (*_TRANSPORT, _Transient, BotoCoreError) as exc:
                raise S3Unavailable(
                    f"object storage did not answer ({what}); retry shortly") from exc

    async def _op(self, what: str, method: str, **params: Any) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            result: dict[str, Any] = await getattr(self._client, method)(**params)
            return result

        return await self._call(what, run)

    # -- URLs ------------------------------------------------------------------------
    async def _presign(self, method: str, params: dict[str, Any], expires: int) -> str:
        # Presigning is local, but a URL to a store known to be down is no use: while the
        # breaker is open, refuse at once as the network calls do.
        if self.breaker.state == "open":
            raise CircuitOpenError("s3 is unavailable (circuit open); retry later",
                                   headers={"Retry-After": "1"}, service="s3")
        ttl = max(1, int(expires - datetime.now().timestamp()))
        url: str = await self._client.generate_presigned_url(
            method, Params={"Bucket": self.bucket, **params}, ExpiresIn=ttl)
        return url

    async def upload_url(self, file_id: str, size: int, content_type: str, expires: int) -> str:
        # Content-Length is signed where the store honours it (AWS); moto does not, so
        # complete() verifies the stored size anyway.
        return await self._presign(
            "put_object", {"Key": self.key(file_id), "ContentLength": size}, expires)

    async def download_url(
        self, file_id: str, disposition: str, content_type: str, expires: int
    ) -> str:
        return await self._presign("get_object", {
            "Key": self.key(file_id), "ResponseContentDisposition": disposition,
            "ResponseContentType": content_type}, expires)

    # -- objects -----------------------------------------------------------------------
    async def size(self, file_id: str) -> int | None:
        async def head() -> int | None:
            try:
                r = await self._client.head_object(Bucket=self.bucket, Key=self.key(file_id))
            except ClientError as exc:
                if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return int(r["ContentLength"])

        return await self._call("HeadObject", head)

    async def head_bytes(self, file_id: str, n: int) -> bytes:
        async def get() -> bytes:
            r = await self._client.get_object(
                Bucket=self.bucket, Key=self.key(file_id), Range=f"bytes=0-{n - 1}")
            async with r["Body"] as body:
                data: bytes = await body.read()
            return data

        return await self._call("GetObject", get)

    async def sha256(self, file_id: str) -> str:
        async def digest() -> str:
            h = hashlib.sha256()
            r = await self._client.get_object(Bucket=self.bucket, Key=self.key(file_id))
            async with r["Body"] as body:
                while chunk := await body.read(1024 * 1024):
                    h.update(chunk)
            return h.hexdigest()

        return await self._call("GetObject", digest, long=True)

    async def delete(self, file_id: str) -> None:
        await self._call("DeleteObject", lambda: self._client.delete_object(
            Bucket=self.bucket, Key=self.key(file_id)))

    async def keys(self) -> AsyncIterator[tuple[str, datetime]]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix,
                                      "MaxKeys": 1000}
            if token:
                params["ContinuationToken"] = token
            page = await self._op("ListObjectsV2", "list_objects_v2", **params)
            for obj in page.get("Contents", []):
                yield str(obj["Key"])[len(self.prefix):], obj["LastModified"]
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    # -- multipart -----------------------------------------------------------------------
    async def create_multipart(self, file_id: str, content_type: str) -> str:
        r = await self._call("CreateMultipartUpload", lambda: self._client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key(file_id), ContentType=content_type))
        return str(r["UploadId"])

    async def part_url(self, file_id: str, upload_id: str, part_number: int, expires: int) -> str:
        return await self._presign("upload_part", {
            "Key": self.key(file_id), "UploadId": upload_id, "PartNumber": part_number}, expires)

    async def list_parts(self, file_id: str, upload_id: str) -> list[StoredPart]:
        parts: list[StoredPart] = []
        marker = 0
        while True:
            r = await self._op("ListParts", "list_parts", Bucket=self.bucket,
                               Key=self.key(file_id), UploadId=upload_id,
                               PartNumberMarker=marker)
            for p in r.get("Parts", []):
                parts.append(StoredPart(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"])))
            if not r.get("IsTruncated"):
                return parts
            marker = int(r["NextPartNumberMarker"])

    async def complete_multipart(self, file_id: str, upload_id: str) -> None:
        parts = await self.list_parts(file_id, upload_id)
        listed = [{"PartNumber": p.part_number, "ETag": p.etag}
                  for p in sorted(parts, key=lambda p: p.part_number)]

        async def assemble() -> None:
            try:
                await self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key(file_id), UploadId=upload_id,
                    MultipartUpload={"Parts": listed})
            except ClientError as exc:
                # a retried call whose first attempt did finish: the caller checks the
                # object itself (HeadObject) next
                if _code(exc) == "NoSuchUpload":
                    return
                if _code(exc) in _BAD_PARTS:
                    raise PartsRejected(
                        f"the store refused the parts ({_code(exc)}): every part but the "
                        "last must be part_size bytes; upload the wrong parts again",
                        store_code=_code(exc)) from exc
                raise

        await self._call("CompleteMultipartUpload", assemble, long=True)

    async def abort_multipart(self, file_id: str, upload_id: str) -> None:
        async def abort() -> None:
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key(file_id), UploadId=upload_id)
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload" and _status(exc) != 404:
                    raise

        await self._call("AbortMultipartUpload", abort)

    async def pending_multiparts(self) -> list[PendingMultipart]:
        r = await self._call("ListMultipartUploads", lambda: self._client.list_multipart_uploads(
            Bucket=self.bucket, Prefix=self.prefix))
        return [PendingMultipart(str(u["Key"])[len(self.prefix):], str(u["UploadId"]),
                                 u["Initiated"]) for u in r.get("Uploads", [])]
