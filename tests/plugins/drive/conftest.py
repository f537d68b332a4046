"""Fixtures for the drive tests: a real app on a known loopback port (presigned URLs are
absolute), on a file SQLite database, with the local back end or S3 on a private
moto_server; parametrised tests run on both back ends."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import aiohttp
import pytest

from secureconnect.testing.services import MotoServer, free_port

from .helpers import SQLITE_FILE, Drive, create_bucket, merge

_buckets = itertools.count()


@pytest.fixture(scope="session")
def moto_session() -> Iterator[MotoServer]:
    """One moto_server per test session (per xdist worker); buckets per test."""
    if not MotoServer.available():
        if os.environ.get("SC_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("moto_server is not installed (pip install -e '.[test]')")
        pytest.skip("moto_server is not installed")
    server = MotoServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def moto(moto_session: MotoServer) -> MotoServer:
    if not moto_session.running:  # a test stopped it: bring it back
        moto_session.start()
    return moto_session


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def s3_settings(url: str, bucket: str) -> dict[str, Any]:
    return {"backend": "s3", "s3_endpoint_url": url, "s3_bucket": bucket,
            "s3_access_key_id": "testing", "s3_secret_access_key": "testing",
            "s3_timeout": 3.0, "s3_retry_attempts": 2,
            # moto's minimum part size is S3's: 5 MiB
            "multipart_part_size": 5 * 1024 * 1024}


@pytest.fixture
async def make_drive(
    aiohttp_client: Any, sc_app: Callable[..., Any], request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Drive]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def factory(backend: str = "local", overrides: Mapping[str, Any] | None = None,
                      *, moto_server: MotoServer | None = None) -> Drive:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        drive: dict[str, Any] = {"public_url": base}
        s3_url = bucket = None
        if backend == "s3":
            server = moto_server or request.getfixturevalue("moto")
            s3_url = server.url
            bucket = f"drive-test-{os.getpid()}-{next(_buckets)}"
            await create_bucket(s3_url, bucket)
            drive.update(s3_settings(s3_url, bucket))
        settings = merge({"database": {"url": SQLITE_FILE}, "drive": drive}, overrides)
        client = await aiohttp_client(sc_app(settings), server_kwargs={"port": port})
        plain = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        sessions.append(plain)
        return Drive(client, backend, plain, s3_url, bucket)

    yield factory
    for s in sessions:
        await s.close()
