"""The SQL message store and conversations on PostgreSQL, black-box over HTTP:
concurrent senders get gap-free seqs, concurrent retries one message."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import all_messages, create_group, users


@pytest.mark.postgres
async def test_concurrent_sends_and_retries_on_postgres(sc_client, postgres_url):
    client = await sc_client({"database": {"url": postgres_url}, "rate_limits": {"enabled": False}})
    a, b, c = await users(client, 3)
    cid = await create_group(client, a, [b, c])

    async def post(user, content, key=None):
        headers = dict(user.headers)
        if key:
            headers["Idempotency-Key"] = key
        r = await client.post(
            f"/v1/conversations/{cid}/messages", json={"content": content}, headers=headers
        )
        assert r.status in (200, 201), await r.text()
        return r.status, await r.json()

    results = await asyncio.gather(
        *(post(u, f"{u.user_id[-4:]}-{i}") for i in range(20) for u in (a, b, c)),
        *(post(a, "retry", key="same") for _ in range(8)),
    )
    retries = results[60:]
    assert sorted(s for s, _ in retries) == [200] * 7 + [201]
    assert len({m["id"] for _, m in retries}) == 1
    stored = await all_messages(client, c, cid)
    assert sorted(m["seq"] for m in stored) == list(range(1, 62))
    # a direct pair created concurrently from both sides is one conversation
    rs = await asyncio.gather(
        *(
            client.post(
                "/v1/conversations",
                json={"type": "direct", "participant_ids": [y.user_id]},
                headers=x.headers,
            )
            for x, y in [(b, c), (c, b)] * 3
        )
    )
    assert len({(await r.json())["id"] for r in rs}) == 1
