"""A 50 MB upload dropped halfway resumes from the server's offset: tus on the local back
end, S3 multipart (ListParts) on S3. The downloaded bytes hash equal."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from secureconnect.testing.helpers import wait_for

from .helpers import sha

MB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Dropped(Exception):
    pass


async def _dropping_body(data: bytes, stop_at: int) -> AsyncIterator[bytes]:
    for i in range(0, stop_at, 256 * 1024):
        yield data[i:min(i + 256 * 1024, stop_at)]
    raise Dropped("the client went away")


async def _tus_create(d: Any, user: Any, data: bytes, **meta: str) -> str:
    metadata = {"filename": "big.bin", "filetype": "application/octet-stream",
                "sha256": sha(data), **meta}
    r = await d.client.post("/v1/drive/uploads", headers={
        **user.headers, **TUS, "Upload-Length": str(len(data)),
        "Upload-Metadata": ",".join(f"{k} {_b64(v)}" for k, v in metadata.items())})
    assert r.status == 201, await r.text()
    assert r.headers["Upload-Expires"].endswith("GMT")
    return r.headers["Location"]


async def _offset(d: Any, user: Any, location: str) -> int:
    async with d.plain.head(location, headers={**user.headers, **TUS}) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        return int(r.headers["Upload-Offset"])


async def test_tus_50mb_interrupted_upload_resumes(make_drive: Any) -> None:
    d = await make_drive("local")
    alice = await d.user()
    data = os.urandom(50 * MB)
    r = await d.client.options("/v1/drive/uploads")
    assert r.status == 204 and r.headers["Tus-Version"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == {
        "creation", "expiration", "termination", "checksum"}
    location = await _tus_create(d, alice, data)
    assert (await d.quota(alice))["used"] == len(data)

    patch_headers = {**alice.headers, **TUS,
                     "Content-Type": "application/offset+octet-stream"}
    with pytest.raises((aiohttp.ClientError, Dropped)):
        async with d.plain.patch(location, data=_dropping_body(data, 25 * MB),
                                 headers={**patch_headers, "Upload-Offset": "0",
                                          "Content-Length": str(len(data))}) as resp:
            await resp.read()

    async def recorded() -> bool:
        return await _offset(d, alice, location) > 0

    await wait_for(recorded, timeout=10)
    offset = await _offset(d, alice, location)
    assert 0 < offset <= 25 * MB

    # a PATCH at a stale offset is refused with the server's offset
    async with d.plain.patch(location, data=b"x", headers={
            **patch_headers, "Upload-Offset": "0"}) as resp:
        assert resp.status == 409
    # a chunk whose checksum lies is discarded
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    async with d.plain.patch(location, data=io.BytesIO(data[offset:offset + MB]), headers={
            **patch_headers, "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha1 {bad}"}) as resp:
        assert resp.status == 460
    assert await _offset(d, alice, location) == offset

    rest = data[offset:]
    digest = base64.b64encode(hashlib.sha256(rest).digest()).decode()
    async with d.plain.patch(location, data=io.BytesIO(rest), headers={
            **patch_headers, "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha256 {digest}"}) as resp:
        assert resp.status == 204, await resp.text()
        assert int(resp.headers["Upload-Offset"]) == len(data)

    file_id = location.rsplit("/", 1)[1]
    f = await d.complete(alice, file_id)  # already ready: idempotent
    assert f["status"] == "ready" and f["upload"] == "tus"
    link = await d.download(alice, file_id)
    status, body, _ = await d.fetch(link["url"])
    assert status == 200 and sha(body) == sha(data)


async def test_tus_protocol_errors_and_termination(make_drive: Any) -> None:
    d = await make_drive("local")
    alice, bob = await d.users(2)
    data = os.urandom(1000)
    r = await d.client.post("/v1/drive/uploads", headers={
        **alice.headers, "Upload-Length": "10"})
    assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
    location = await _tus_create(d, alice, data)
    async with d.plain.patch(location, data=data, headers={
            **alice.headers, **TUS, "Upload-Offset": "0",
            "Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 415
    async with d.plain.head(location, headers={**bob.headers, **TUS}) as resp:
        assert resp.status == 404
    async with d.plain.patch(location, data=data + b"extra", headers={
            **alice.headers, **TUS, "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream"}) as resp:
        assert resp.status == 413
    assert await _offset(d, alice, location) == len(data)
    async with d.plain.delete(location, headers={**alice.headers, **TUS}) as resp:
        assert resp.status == 204
    assert (await d.quota(alice))["used"] == 0
    async with d.plain.head(location, headers={**alice.headers, **TUS}) as resp:
        assert resp.status == 404


async def test_s3_50mb_interrupted_multipart_resumes(make_drive: Any) -> None:
    d = await make_drive("s3")
    alice = await d.user()
    data = os.urandom(50 * MB)
    res = await d.reserve(alice, len(data), multipart=True, sha256=sha(data))
    assert res["upload_url"] is None
    part_size = res["multipart"]["part_size"]
    count = res["multipart"]["part_count"]
    assert count == -(-len(data) // part_size) and count > 2
    file_id = res["file"]["id"]

    async def send_parts(numbers: list[int]) -> None:
        r = await d.client.post(f"/v1/drive/files/{file_id}/parts",
                                json={"part_numbers": numbers}, headers=alice.headers)
        assert r.status == 200, await r.text()
        for part in (await r.json())["parts"]:
            n = part["part_number"]
            assert await d.put(part["url"], data[(n - 1) * part_size:n * part_size]) == 200

    half = count // 2
    await send_parts(list(range(1, half + 1)))
    body = await d.complete(alice, file_id, status=409)  # the rest is missing
    assert body["code"] == "upload_incomplete"

    # the client "restarts": it asks the server which parts are stored and resumes
    r = await d.client.get(f"/v1/drive/files/{file_id}/parts", headers=alice.headers)
    stored = [p["part_number"] for p in (await r.json())["parts"]]
    assert stored == list(range(1, half + 1))
    await send_parts([n for n in range(1, count + 1) if n not in stored])
    f = await d.complete(alice, file_id)
    assert f["status"] == "ready" and f["upload"] == "multipart"
    link = await d.download(alice, file_id)
    status, downloaded, _ = await d.fetch(link["url"])
    assert status == 200 and sha(downloaded) == sha(data)
    assert (await d.quota(alice))["used"] == len(data)


async def test_tus_is_local_only_and_multipart_s3_only(make_drive: Any) -> None:
    local = await make_drive("local")
    alice = await local.user()
    body = await local.reserve(alice, 10 * MB, status=422, multipart=True)
    assert "tus" in body["detail"]


async def test_tus_lock_is_per_upload_and_a_stalled_client_frees_it(make_drive: Any) -> None:
    import asyncio

    d = await make_drive("local", {"drive": {"upload_idle_timeout": 1.0,
                                             "upload_lock_timeout": 0.3}})
    alice = await d.user()
    data = os.urandom(300_000)
    location = await _tus_create(d, alice, data)
    headers = {**alice.headers, **TUS, "Content-Type": "application/offset+octet-stream"}
    sent = asyncio.Event()
    never = asyncio.Event()

    async def stalling_body() -> AsyncIterator[bytes]:
        yield data[:100_000]
        sent.set()
        await never.wait()  # the client hangs without closing the connection
        yield b""

    async def stalled_patch() -> int:
        async with d.plain.patch(location, data=stalling_body(), headers={
                **headers, "Upload-Offset": "0", "Content-Length": str(len(data))}) as r:
            return int(r.status)

    stalled = asyncio.create_task(stalled_patch())
    await asyncio.wait_for(sent.wait(), 5)

    async def locked() -> bool:
        async with d.plain.patch(location, data=b"x", headers={
                **headers, "Upload-Offset": "0"}) as r:
            return r.status == 423

    # a second PATCH of the same upload waits for the lock, then gets 423
    await wait_for(locked, timeout=5)
    # the idle timeout cuts the stalled body and frees the lock; its bytes are kept
    async def resumable() -> bool:
        return await _offset(d, alice, location) > 0

    await wait_for(resumable, timeout=10)
    offset = await _offset(d, alice, location)
    async with d.plain.patch(location, data=io.BytesIO(data[offset:]), headers={
            **headers, "Upload-Offset": str(offset)}) as r:
        assert r.status == 204, await r.text()
    never.set()
    stalled.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
        await stalled
    file_id = location.rsplit("/", 1)[1]
    link = await d.download(alice, file_id)
    status, body, _ = await d.fetch(link["url"])
    assert status == 200 and sha(body) == sha(data)


async def test_s3_multipart_with_a_short_middle_part_is_refused(make_drive: Any) -> None:
    d = await make_drive("s3")
    alice = await d.user()
    res = await d.reserve(alice, 11 * MB, multipart=True)
    fid = res["file"]["id"]
    r = await d.client.post(f"/v1/drive/files/{fid}/parts", json={"part_numbers": [1, 2, 3]},
                            headers=alice.headers)
    urls = {p["part_number"]: p["url"] for p in (await r.json())["parts"]}
    # part 1 too short, the bytes moved to part 3: the total is right, the layout is not
    for n, size in ((1, 4 * MB), (2, 5 * MB), (3, 2 * MB)):
        assert await d.put(urls[n], os.urandom(size)) == 200
    body = await d.complete(alice, fid, status=409)
    assert body["code"] == "upload_incomplete"
    r = await d.client.post(f"/v1/drive/files/{fid}/parts", json={"part_numbers": [0]},
                            headers=alice.headers)
    assert r.status == 422
