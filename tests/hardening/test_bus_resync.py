"""After a bus outage, sockets on the instance that missed events are told to resync
(issue 22, item 3): two instances, a real Redis really stopped."""

from __future__ import annotations

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import register_and_login

SECRET = {"jwt_secret": "two-instances-share-this-secret-0123456789"}


async def test_sockets_are_told_to_resync_after_a_bus_outage(sc_client, sc_ws, redis_server,
                                                             postgres_url):
    overrides = {"redis": {"url": redis_server.url, "socket_timeout": 0.5},
                 "database": {"url": postgres_url}, "auth": SECRET}
    a = await sc_client(overrides)
    b = await sc_client(overrides)
    user = await register_and_login(a)
    ws_b = await sc_ws(b, user.access_token)
    topic = f"user:{user.user_id}"
    kernel_a = a.app[KERNEL]

    async def crosses() -> bool:
        await kernel_a.ws.publish_to_user(user.user_id, "test.ping", {})
        try:
            await ws_b.expect("test.ping", timeout=0.3)
            return True
        except AssertionError:
            return False

    await wait_for(crosses, timeout=10, interval=0.1, message="A reaches B")
    redis_server.stop()
    for n in range(5):  # lost for B: the bus is down
        await kernel_a.ws.publish_to_user(user.user_id, "test.lost", {"n": n})
    redis_server.start()
    notice = await ws_b.expect("resync", timeout=20)
    assert notice["data"]["reason"] == "bus_outage", notice
    assert topic in notice["data"].get("topics", []), notice
