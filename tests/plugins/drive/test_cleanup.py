"""The cleanup job: abandoned reservations release their quota, abandoned S3 multipart
uploads are aborted (their parts freed), orphan objects are swept."""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pytest

from secureconnect.testing.helpers import wait_for

from .helpers import s3_client

MB = 1024 * 1024


async def _run(d: Any) -> int:
    return int(await d.kernel().jobs.run("drive.cleanup"))


async def test_abandoned_reservation_releases_quota(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend, {"drive": {"reservation_ttl": 2}})
    alice = await d.user()
    kept = await d.upload(alice, os.urandom(500))
    abandoned = await d.reserve(alice, 1000)
    assert await d.put(abandoned["upload_url"], os.urandom(1000)) == 200  # never completed
    assert (await d.quota(alice))["used"] == 1500
    assert await _run(d) == 0  # not expired yet

    async def released() -> bool:
        await _run(d)
        return bool((await d.quota(alice))["used"] == 500)

    await wait_for(released, timeout=15)
    assert not await d.object_exists(abandoned["file"]["id"])
    r = await d.client.get(f"/v1/drive/files/{abandoned['file']['id']}", headers=alice.headers)
    assert r.status == 404
    assert await d.object_exists(kept["id"])
    assert d.kernel().metrics.value("drive_cleanup_reservations_total") >= 1
    assert d.kernel().metrics.value("drive_uploads_total", {"status": "expired"}) == 1


async def test_abandoned_multipart_is_aborted(make_drive: Any) -> None:
    d = await make_drive("s3", {"drive": {"reservation_ttl": 2}})
    alice = await d.user()
    res = await d.reserve(alice, 12 * MB, multipart=True)
    file_id = res["file"]["id"]
    r = await d.client.post(f"/v1/drive/files/{file_id}/parts", json={"part_numbers": [1]},
                            headers=alice.headers)
    url = (await r.json())["parts"][0]["url"]
    async with d.plain.put(url, data=io.BytesIO(os.urandom(5 * MB))) as resp:
        assert resp.status == 200
    key = f"drive/{file_id}"
    async with await s3_client(d.s3_url) as s3:
        uploads = (await s3.list_multipart_uploads(Bucket=d.bucket)).get("Uploads", [])
        assert [u["Key"] for u in uploads] == [key]
        upload_id = uploads[0]["UploadId"]
        assert len((await s3.list_parts(Bucket=d.bucket, Key=key,
                                        UploadId=upload_id))["Parts"]) == 1

    async def released() -> bool:
        await _run(d)
        return bool((await d.quota(alice))["used"] == 0)

    await wait_for(released, timeout=15)
    async with await s3_client(d.s3_url) as s3:
        assert (await s3.list_multipart_uploads(Bucket=d.bucket)).get("Uploads", []) == []
        try:
            parts = (await s3.list_parts(Bucket=d.bucket, Key=key,
                                         UploadId=upload_id)).get("Parts", [])
        except s3.exceptions.NoSuchUpload:
            parts = []
        assert parts == []
    assert d.kernel().metrics.value("drive_cleanup_reservations_total") == 1


async def test_orphans_and_unclaimed_multiparts_are_swept(make_drive: Any,
                                                         backend: str) -> None:
    d = await make_drive(backend, {"drive": {"orphan_grace": 0}})
    alice = await d.user()
    kept = await d.upload(alice, b"keep me")
    orphan = str(uuid.uuid4())
    storage = d.kernel().state["drive"].drive.storage
    if backend == "local":
        path = storage.path(orphan)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"lost")
    else:
        async with await s3_client(d.s3_url) as s3:
            await s3.put_object(Bucket=d.bucket, Key=f"drive/{orphan}", Body=b"lost")
            await s3.create_multipart_upload(Bucket=d.bucket, Key=f"drive/{uuid.uuid4()}")
    assert await storage.size(orphan) == 4
    swept = await _run(d)
    assert swept == (1 if backend == "local" else 2)
    assert await storage.size(orphan) is None
    assert await d.object_exists(kept["id"])
    if backend == "s3":
        async with await s3_client(d.s3_url) as s3:
            assert (await s3.list_multipart_uploads(Bucket=d.bucket)).get("Uploads", []) == []
    assert d.kernel().metrics.value("drive_cleanup_orphans_total") == 1


@pytest.mark.postgres
async def test_lifecycle_and_cleanup_on_postgresql(make_drive: Any, postgres_url: str) -> None:
    d = await make_drive("local", {"database": {"url": postgres_url},
                                   "drive": {"reservation_ttl": 2}})
    alice, bob = await d.users(2)
    f = await d.upload(alice, b"on postgres")
    r = await d.client.get("/v1/drive/files", headers=alice.headers)
    assert [x["id"] for x in (await r.json())["items"]] == [f["id"]]
    await d.download(bob, f["id"], status=404)
    await d.reserve(alice, 100)

    async def released() -> bool:
        await _run(d)
        return bool((await d.quota(alice))["used"] == len(b"on postgres"))

    await wait_for(released, timeout=15)
    r = await d.client.delete(f"/v1/drive/files/{f['id']}", headers=alice.headers)
    assert r.status == 204
    assert (await d.quota(alice))["used"] == 0
