"""The test helpers themselves must be able to fail (issue 22, item 30)."""

from __future__ import annotations

import pytest

from secureconnect.testing.accounts import register_and_login


async def test_expect_nothing_fails_on_a_dead_socket(sc_client, sc_ws):
    client = await sc_client()
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    await ws.expect_nothing("chat.message", within=0.1)  # open and quiet: passes
    assert (await client.post("/v1/auth/logout", headers=user.headers)).status == 204
    with pytest.raises(AssertionError, match="socket closed"):
        await ws.expect_nothing("chat.message", within=2.0)
