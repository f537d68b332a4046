"""What is stored is what was reserved: signatures, sizes, hashes and image types are
checked by the server; a refused upload leaves no object and no quota behind."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from secureconnect.testing.helpers import wait_for

from .helpers import sha

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(100)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_local_tampered_and_expired_urls_are_403(make_drive: Any) -> None:
    d = await make_drive("local", {"drive": {"url_ttl": 1}})
    alice = await d.user()
    data = os.urandom(1000)
    res = await d.reserve(alice, len(data))
    url = res["upload_url"]
    query = parse_qs(urlsplit(url).query)
    # a larger max, a later expiry, another file, a forged signature: all refused
    for bad in (_with_query(url, max=str(10**9)),
                _with_query(url, expires=str(int(query["expires"][0]) + 3600)),
                _with_query(url, sig="A" * 43),
                url.replace(res["file"]["id"], "00000000-0000-7000-8000-000000000000")):
        async with d.plain.put(bad, data=data) as r:
            assert r.status == 403, bad
            assert (await r.json())["code"] == "invalid_signature"
    # a download URL cannot be used to upload (the method is signed)
    assert await d.put(url, data) == 200
    f = await d.complete(alice, res["file"]["id"])
    link = await d.download(alice, f["id"])
    async with d.plain.put(link["url"], data=data) as r:
        assert r.status == 403
    # an upload URL cannot be reused once the file is complete
    assert await d.put(url, os.urandom(1000)) in (403, 409)

    async def expired() -> bool:
        status, _body, _ = await d.fetch(link["url"])
        return status == 403

    await wait_for(expired, timeout=5)
    status, _body, _ = await d.fetch(link["url"])
    assert status == 403


async def test_s3_urls_are_presigned_for_url_ttl(make_drive: Any) -> None:
    # moto checks neither signatures nor expiry; AWS/MinIO do. What we own: the URL is a
    # SigV4 presigned URL for this object, valid for url_ttl seconds at most.
    d = await make_drive("s3", {"drive": {"url_ttl": 120}})
    alice = await d.user()
    res = await d.reserve(alice, 10)
    q = parse_qs(urlsplit(res["upload_url"]).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert 100 <= int(q["X-Amz-Expires"][0]) <= 120
    assert res["file"]["id"] in res["upload_url"]
    assert "content-length" in q["X-Amz-SignedHeaders"][0]


async def _assert_refused_and_gone(d: Any, user: Any, file_id: str) -> None:
    assert not await d.object_exists(file_id)
    assert (await d.quota(user))["used"] == 0
    r = await d.client.get(f"/v1/drive/files/{file_id}", headers=user.headers)
    assert r.status == 404


async def test_body_larger_than_reserved_is_refused(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend)
    alice = await d.user()
    res = await d.reserve(alice, 1000)
    status = await d.put(res["upload_url"], os.urandom(5000))
    if backend == "local":
        # the local route cuts the body at the reserved size: nothing is stored
        assert status == 413
        assert not await d.object_exists(res["file"]["id"])
        body = await d.complete(alice, res["file"]["id"], status=409)
        assert body["code"] == "upload_incomplete"
        r = await d.client.delete(f"/v1/drive/files/{res['file']['id']}",
                                  headers=alice.headers)
        assert r.status == 204
    else:
        # a presigned PUT cannot cap the size on moto: complete verifies the stored size
        assert status == 200
        body = await d.complete(alice, res["file"]["id"], status=422)
        assert body["code"] == "upload_mismatch" and body["stored"] == 5000
    await _assert_refused_and_gone(d, alice, res["file"]["id"])


async def test_short_body_and_wrong_hash_are_refused(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend)
    alice = await d.user()
    data = os.urandom(2000)
    short = await d.reserve(alice, len(data))
    assert await d.put(short["upload_url"], data[:1500]) == 200
    body = await d.complete(alice, short["file"]["id"], status=422)
    assert body["code"] == "upload_mismatch"
    await _assert_refused_and_gone(d, alice, short["file"]["id"])

    wrong = await d.reserve(alice, len(data), sha256=sha(b"something else"))
    assert await d.put(wrong["upload_url"], data) == 200
    body = await d.complete(alice, wrong["file"]["id"], status=422)
    assert body["code"] == "upload_mismatch" and body["sha256"] == sha(data)
    await _assert_refused_and_gone(d, alice, wrong["file"]["id"])


async def test_complete_before_upload_is_409(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend)
    alice = await d.user()
    res = await d.reserve(alice, 10)
    body = await d.complete(alice, res["file"]["id"], status=409)
    assert body["code"] == "upload_incomplete"
    r = await d.client.get(f"/v1/drive/files/{res['file']['id']}/download",
                           headers=alice.headers)
    assert r.status == 409
    assert (await d.quota(alice))["used"] == 10  # still reserved for the retry


async def test_declared_images_are_sniffed(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend)
    alice = await d.user()
    png = await d.upload(alice, PNG, name="a.png", content_type="image/png")
    assert png["status"] == "ready"
    liar = await d.reserve(alice, 500, name="b.png", content_type="image/png")
    assert await d.put(liar["upload_url"], b"<html>" + os.urandom(494)) == 200
    body = await d.complete(alice, liar["file"]["id"], status=422)
    assert body["code"] == "upload_mismatch"
    assert not await d.object_exists(liar["file"]["id"])
    # end-to-end encrypted: the server never looks inside
    sealed = await d.upload(alice, os.urandom(500), name="c.png", content_type="image/png",
                            is_encrypted=True)
    assert sealed["is_encrypted"] is True and sealed["status"] == "ready"
    assert (await d.quota(alice))["used"] == len(PNG) + 500




async def test_local_complete_waits_for_a_put_in_progress(make_drive: Any) -> None:
    import asyncio

    d = await make_drive("local")
    alice = await d.user()
    data = os.urandom(200_000)
    res = await d.reserve(alice, len(data))
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_body() -> Any:
        yield data[:100_000]
        started.set()
        await release.wait()
        yield data[100_000:]

    async def put() -> int:
        async with d.plain.put(res["upload_url"], data=slow_body(),
                               headers={"Content-Length": str(len(data))}) as r:
            return int(r.status)

    task = asyncio.create_task(put())
    await asyncio.wait_for(started.wait(), 5)

    async def refused_while_busy() -> bool:
        r = await d.client.post(f"/v1/drive/files/{res['file']['id']}/complete",
                                headers=alice.headers)
        body = await r.json()
        return r.status == 409 and "in progress" in body["detail"]

    await wait_for(refused_while_busy, timeout=5)
    # a second PUT of the same file meanwhile is refused too
    assert await d.put(res["upload_url"], data) == 409
    release.set()
    assert await task == 200
    f = await d.complete(alice, res["file"]["id"])
    assert f["status"] == "ready"
