"""Web Push in the web client (headless Chromium): the panel registers its service
worker, subscribes with the server's VAPID public key and registers the subscription as
a ``webpush`` device; "Send a test" makes the server deliver a real RFC 8291-encrypted
Web Push to the subscription's endpoint — a push service played by the test, which
decrypts it with the subscription's keys. Headless Chromium has no push service of its
own offline, so ``PushManager.subscribe`` is replaced in the page by one answering the
test's subscription (after checking the key it was given).

The admin console lists push dead letters and retries / drops them."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secureconnect.app import KERNEL
from secureconnect.auth.service import create_user
from secureconnect.testing.accounts import DEFAULT_PASSWORD
from secureconnect.testing.services import free_port

from .harness import Browser
from .test_browser_chat import assert_clean, sign_up

pytestmark = pytest.mark.slow


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


VAPID = ec.generate_private_key(ec.SECP256R1())
VAPID_PEM = VAPID.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
VAPID_PUBLIC = VAPID.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
LIVE_SETTINGS = {"push": {"providers": ["log", "webpush"], "poll_interval": 0.2,
                          "webpush": {"vapid_private_key": VAPID_PEM,
                                      "vapid_subject": "mailto:ops@example.com",
                                      "allowed_hosts": ["127.0.0.1"]}}}

STUB_SUBSCRIBE = """
const sub = arguments[0];
PushManager.prototype.getSubscription = async function () { return null; };
PushManager.prototype.subscribe = async function (options) {
  window.__subscribeKey = Array.from(new Uint8Array(options.applicationServerKey));
  return { endpoint: sub.endpoint, toJSON: () => sub, unsubscribe: async () => true };
};
"""


class PushService:
    """A push service on loopback: records every request it receives."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.port = free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None

    def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.received.append((dict(request.headers), await request.read()))
            return web.Response(status=201)

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/push/{token}", receive)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        self.server.call(start())

    def stop(self) -> None:
        if self.runner is not None:
            self.server.call(self.runner.cleanup())


@pytest.fixture(scope="module")
def push_service(live) -> Any:
    server, _ = live
    service = PushService(server)
    service.start()
    yield service
    service.stop()


def test_web_push_subscription_and_a_delivered_test_push(live, browsers, push_service) -> None:
    import http_ece

    server, _ = live
    browser: Browser = browsers(server.url, "pusher")
    browser.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": server.url, "permissions": ["notifications"]})
    sign_up(browser, "Pat", "pat@example.com")
    browser.find("#push-enable")

    receiver = ec.generate_private_key(ec.SECP256R1())
    receiver_public = receiver.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    auth = os.urandom(16)
    subscription = {"endpoint": f"http://127.0.0.1:{push_service.port}/push/pat",
                    "expirationTime": None,
                    "keys": {"p256dh": b64url(receiver_public), "auth": b64url(auth)}}
    browser.js(STUB_SUBSCRIBE, subscription)
    browser.click("#push-enable")
    browser.wait(lambda: browser.find("#push-status").get_attribute("data-state") == "on",
                 timeout=20, what="push on")
    # subscribed with the server's VAPID public key; the service worker is registered
    assert bytes(browser.js("return window.__subscribeKey")) == VAPID_PUBLIC
    script = browser.driver.execute_async_script("""
      const done = arguments[arguments.length - 1];
      navigator.serviceWorker.getRegistration('/static/plugins/push/')
        .then((r) => done(r && (r.active || r.installing || r.waiting).scriptURL),
              (e) => done(String(e)));
    """)
    assert str(script).endswith("/static/plugins/push/sw.js")

    browser.click("#push-test")
    browser.wait(lambda: push_service.received, timeout=30, what="a push delivered")
    headers, body = push_service.received[-1]
    assert headers["Content-Encoding"] == "aes128gcm"
    assert f"k={b64url(VAPID_PUBLIC)}" in headers["Authorization"]
    payload = json.loads(http_ece.decrypt(body, private_key=receiver, auth_secret=auth,
                                          version="aes128gcm"))
    assert payload["type"] == "test"

    # the service worker turns a push into a notification, delivered through DevTools
    # (`ServiceWorker.deliverPushMessage` needs the registration's id, which only its
    # events carry: the ids of a fresh profile are small numbers; a wrong id is silently
    # ignored by Chromium)
    message = json.dumps({"type": "message", "conversation_id": "c1", "encrypted": True})
    shown = """
      const done = arguments[arguments.length - 1];
      navigator.serviceWorker.getRegistration('/static/plugins/push/')
        .then((r) => r.getNotifications())
        .then((list) => done(list.map((n) => [n.title, n.body, n.tag])), (e) => done(String(e)));
    """
    browser.driver.execute_cdp_cmd("ServiceWorker.enable", {})
    # a wrong id is ignored and this origin has one registration, so offer the message
    # to every small id at once: exactly one notification can result
    for registration_id in map(str, range(200)):
        browser.driver.execute_cdp_cmd("ServiceWorker.deliverPushMessage", {
            "origin": server.url, "registrationId": registration_id, "data": message})
    browser.wait(lambda: browser.driver.execute_async_script(shown), timeout=20,
                 what="the notification shown")
    assert browser.driver.execute_async_script(shown)[-1] == [
        "New message", "Encrypted message", "conv:c1"]
    assert_clean(browser)


def test_admin_console_retries_and_drops_push_dead_letters(live, browsers) -> None:
    server, _ = live
    kernel = server.app[KERNEL]
    server.call(create_user(kernel, "root@example.com", DEFAULT_PASSWORD, "Root", admin=True))
    ids = server.call(_dead_letters(kernel, 2))
    browser: Browser = browsers(server.url, "admin")
    browser.open("/admin")
    browser.fill("#sign-in input[name=email]", "root@example.com")
    browser.fill("#sign-in input[name=password]", DEFAULT_PASSWORD)
    browser.click("#sign-in button[type=submit]")
    row = '#push-dead-letters tr.dead-letter[data-id="{}"]'
    browser.find(row.format(ids[0]))
    assert "http_500" in browser.find(row.format(ids[1])).text
    browser.click(row.format(ids[0]) + " button.drop-dead-letter")
    browser.wait(lambda: not browser.all(row.format(ids[0])), what="dropped")
    browser.click(row.format(ids[1]) + " button.retry-dead-letter")
    browser.wait(lambda: not browser.all("#push-dead-letters tr.dead-letter"), what="retried")
    assert browser.find("#push-dead-letters td.empty").text == "no dead letters"
    actions = {e["action"] for e in kernel.state["web.audit"]}
    assert {"push.dead_letters.drop", "push.dead_letters.retry"} <= actions
    assert_clean(browser)


async def _dead_letters(kernel: Any, n: int) -> list[str]:
    from secureconnect_plugins.push.models import dead_letters

    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = datetime.now(UTC)

    def run(conn: Any) -> None:
        for i in ids:
            conn.execute(dead_letters.insert().values(
                id=i, device_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()),
                provider="webhook", payload='{"type": "test"}', collapse_key=None,
                priority="high", attempts=8, last_error="http_500", created_at=now,
                failed_at=now))

    await kernel.db.write(run)
    return ids
