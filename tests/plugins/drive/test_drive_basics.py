"""Reserve → presigned PUT → complete → download, on both back ends over real HTTP."""

from __future__ import annotations

import os
from typing import Any

from .helpers import sha


async def test_round_trip(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend)
    alice = await d.user()
    data = os.urandom(300_000)
    res = await d.reserve(alice, len(data), name="résumé final.pdf",
                          content_type="application/pdf", sha256=sha(data))
    assert res["file"]["status"] == "pending"
    assert res["upload_url"].startswith("http")
    assert await d.quota(alice) == {"used": len(data), "limit": 10 * 1024**3}
    assert await d.put(res["upload_url"], data) == 200
    f = await d.complete(alice, res["file"]["id"])
    assert f["status"] == "ready" and f["size"] == len(data)
    again = await d.complete(alice, res["file"]["id"])  # idempotent
    assert again["status"] == "ready"
    link = await d.download(alice, f["id"])
    status, body, headers = await d.fetch(link["url"])
    assert status == 200 and sha(body) == sha(data)
    expected = "filename*=UTF-8''r%C3%A9sum%C3%A9%20final.pdf"
    assert expected in link["content_disposition"]
    if backend == "local":
        assert headers["Content-Disposition"] == link["content_disposition"]
        assert headers["Content-Type"] == "application/pdf"
    else:
        # S3 serves the header from the signed response-content-disposition override
        # (moto ignores the override; AWS and MinIO honour it)
        assert "response-content-disposition=attachment" in link["url"]
