"""S3 goes away (moto_server killed): requests fail fast with 503, the breaker opens, and
everything works again after the store comes back."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from secureconnect.testing.helpers import wait_for
from secureconnect.testing.services import MotoServer

from .helpers import create_bucket


@pytest.fixture
def private_moto() -> Iterator[MotoServer]:
    """A moto_server for this test alone: it is killed and restarted."""
    if not MotoServer.available():
        pytest.skip("moto_server is not installed")
    server = MotoServer()
    server.start()
    yield server
    server.close()


async def test_s3_outage_fails_fast_and_recovers(make_drive: Any,
                                                 private_moto: MotoServer) -> None:
    d = await make_drive("s3", {"resilience": {"failure_threshold": 3, "reset_timeout": 1.0}},
                         moto_server=private_moto)
    alice = await d.user()
    await d.upload(alice, os.urandom(100))
    pending = await d.reserve(alice, 100)
    assert await d.put(pending["upload_url"], os.urandom(100)) == 200
    metrics = d.kernel().metrics

    private_moto.stop()
    codes = []
    for _ in range(3):
        start = time.monotonic()
        body = await d.complete(alice, pending["file"]["id"], status=503)
        assert time.monotonic() - start < 3.0  # bounded by s3_timeout, not a hang
        codes.append(body["code"])
    assert codes == ["storage_unavailable"] * 3
    assert metrics.value("circuit_breaker_state", {"service": "s3"}) == 1
    # open: refused at once, without touching the network
    start = time.monotonic()
    r = await d.client.post(f"/v1/drive/files/{pending['file']['id']}/complete",
                            headers=alice.headers)
    assert r.status == 503 and time.monotonic() - start < 0.5
    assert (await r.json())["code"] == "dependency_unavailable"
    assert "Retry-After" in r.headers
    # new reservations are refused too (no quota is taken for an upload that cannot land)
    r = await d.client.post("/v1/drive/files", headers=alice.headers, json={
        "name": "x.bin", "size": 10, "content_type": "application/octet-stream"})
    assert r.status == 503 and (await r.json())["code"] == "dependency_unavailable"
    # the database side keeps working: quota and listing answer
    assert (await d.quota(alice))["used"] == 200

    # the store comes back (empty: moto keeps nothing across restarts)
    private_moto.start()
    await create_bucket(private_moto.url, d.bucket)
    deadline = time.monotonic() + 10
    while True:
        r = await d.client.post("/v1/drive/files", headers=alice.headers, json={
            "name": "again.bin", "size": 50, "content_type": "application/octet-stream"})
        assert r.status == 201
        res = await r.json()
        assert await d.put(res["upload_url"], os.urandom(50)) == 200
        r = await d.client.post(f"/v1/drive/files/{res['file']['id']}/complete",
                                headers=alice.headers)
        if r.status == 200:
            break
        assert r.status == 503 and time.monotonic() < deadline, await r.text()
        # half-open after reset_timeout; wait for the breaker's own clock
        await wait_for(lambda: d.kernel().breaker("s3").state != "open", timeout=5)
    assert metrics.value("circuit_breaker_state", {"service": "s3"}) == 0



async def test_readiness_reports_the_store(make_drive: Any, private_moto: MotoServer) -> None:
    d = await make_drive("s3", moto_server=private_moto)
    r = await d.client.get("/health/ready")
    assert r.status == 200, await r.text()
    private_moto.stop()
    r = await d.client.get("/health/ready")
    assert r.status == 503
    assert "drive_storage" in await r.text()
