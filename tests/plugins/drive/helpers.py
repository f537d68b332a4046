"""Helpers for the drive black-box tests: they speak HTTP only — our API with an access
token, presigned URLs with a plain client that carries no token."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from secureconnect.testing.accounts import TestUser, register_and_login
from secureconnect.testing.helpers import merge_settings

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/drive-test.db"


#: shared helpers of secureconnect.testing, under the names these tests use
merge = merge_settings


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Drive:
    """A running app on a known port plus a plain HTTP client for presigned URLs."""

    client: Any
    backend: str
    plain: aiohttp.ClientSession
    s3_url: str | None = None
    bucket: str | None = None

    async def user(self) -> TestUser:
        return await register_and_login(self.client)

    async def users(self, n: int) -> list[TestUser]:
        return list(await asyncio.gather(*(self.user() for _ in range(n))))

    async def reserve(self, user: TestUser, size: int, status: int = 201, **fields: Any) -> Any:
        body = {"name": "report.bin", "size": size, "content_type": "application/octet-stream",
                **fields}
        r = await self.client.post("/v1/drive/files", json=body, headers=user.headers)
        assert r.status == status, await r.text()
        return await r.json()

    async def put(self, url: str, data: bytes) -> int:
        async with self.plain.put(url, data=io.BytesIO(data)) as r:
            await r.read()
            return r.status

    async def complete(self, user: TestUser, file_id: str, status: int = 200) -> Any:
        r = await self.client.post(f"/v1/drive/files/{file_id}/complete", headers=user.headers)
        assert r.status == status, await r.text()
        return await r.json()

    async def upload(self, user: TestUser, data: bytes, **fields: Any) -> Any:
        res = await self.reserve(user, len(data), **fields)
        assert await self.put(res["upload_url"], data) == 200
        return await self.complete(user, res["file"]["id"])

    async def download(self, user: TestUser, file_id: str, status: int = 200) -> Any:
        r = await self.client.get(f"/v1/drive/files/{file_id}/download", headers=user.headers)
        assert r.status == status, await r.text()
        return await r.json()

    async def fetch(self, url: str) -> tuple[int, bytes, Mapping[str, str]]:
        async with self.plain.get(url) as r:
            return r.status, await r.read(), r.headers

    async def quota(self, user: TestUser) -> Any:
        r = await self.client.get("/v1/drive/quota", headers=user.headers)
        assert r.status == 200, await r.text()
        return await r.json()

    async def object_exists(self, file_id: str) -> bool:
        from secureconnect.app import KERNEL

        kernel = self.client.app[KERNEL]
        size = await kernel.state["drive"].drive.storage.size(file_id)
        return size is not None

    def kernel(self) -> Any:
        from secureconnect.app import KERNEL

        return self.client.app[KERNEL]


async def s3_client(url: str) -> Any:
    from aiobotocore.session import get_session

    return get_session().create_client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing")


async def create_bucket(url: str, bucket: str) -> None:
    async with await s3_client(url) as s3:
        await s3.create_bucket(Bucket=bucket)
