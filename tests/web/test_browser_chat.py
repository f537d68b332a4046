"""The web client in real headless Chromium: two browsers, two users.

One app server and two browsers serve the whole module. The ``world`` fixture signs
both users up and has Alice find Bob by email; each test then stands on its own (also
when xdist hands it to another worker). Browser B reaches the server through a proxy
whose network the test cuts.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import DEFAULT_PASSWORD

from .harness import Browser

pytestmark = pytest.mark.slow

XSS = '<img src=x onerror="document.title=\'pwned\'">'
# what a network cut may log: failed connection attempts, nothing else
NETWORK_NOISE = re.compile(r"WebSocket connection to|net::ERR_|Failed to load resource|"
                           r"WebSocket is closed before")


# click a button of one's own message found by its text
OWN_BUTTON = """
const li = [...document.querySelectorAll('#messages li.mine')]
  .filter(e => e.querySelector('.content')?.textContent === arguments[0]).pop();
const button = li && li.querySelector(arguments[1]);
if (button) button.click();
return !!button;
"""


class World:
    a: Browser
    b: Browser
    server: Any
    proxy: Any
    conversation: str = ""


@pytest.fixture(scope="module")
def world(live, browsers) -> World:
    """Alice and Bob signed up in their own browsers, with a direct conversation that
    Alice started by Bob's exact email (set up once per module and per xdist worker,
    so each test also runs alone)."""
    server, proxy = live
    w = World()
    w.server, w.proxy = server, proxy
    w.a = browsers(server.url, "alice")
    w.b = browsers(proxy.url, "bob")
    sign_up(w.a, "Alice", "alice@example.com")
    sign_up(w.b, "Bob", "bob@example.com")
    w.a.fill("#new-direct input[name=email]", "bob@example.com")
    w.a.click("#new-direct button[type=submit]")
    w.a.wait(lambda: w.a.find("#conversation-title").text == "Bob", what="title Bob")
    w.conversation = w.a.js(
        "return document.querySelector('#conversation-list li.active').dataset.id")
    # Bob's list shows it live
    w.b.find(f'#conversation-list li.conversation[data-id="{w.conversation}"]')
    return w


def sign_up(browser: Browser, name: str, email: str) -> None:
    browser.open("/")
    browser.click("#to-sign-up")
    browser.fill("#sign-up input[name=display_name]", name)
    browser.fill("#sign-up input[name=email]", email)
    browser.fill("#sign-up input[name=password]", DEFAULT_PASSWORD)
    browser.click("#sign-up button[type=submit]")
    browser.find("#conversation-list")
    browser.wait(lambda: browser.find("#conn-status").text == "online", what="socket online")


def message_texts(browser: Browser) -> list[str]:
    return browser.texts("#messages li.message:not(.pending) .content")


def open_conversation(browser: Browser, conversation_id: str) -> None:
    browser.click(f'#conversation-list li.conversation[data-id="{conversation_id}"]')
    browser.wait(lambda: browser.js(
        "return document.querySelector('#conversation-list li.active')?.dataset.id"
    ) == conversation_id, what="conversation open")


def send(browser: Browser, text: str) -> None:
    browser.fill("#composer-input", text)
    browser.click("#send")


def assert_clean(*browsers: Browser) -> None:
    for browser in browsers:
        assert browser.problems() == [], f"{browser.name}: console errors / CSP violations"


def test_sign_up_find_each_other_and_chat_live(world: World) -> None:
    a, b = world.a, world.b
    # (signed up and found by email in the `world` fixture); tokens live in memory only
    assert a.js("return window.localStorage.length + window.sessionStorage.length") == 0
    assert a.js("return document.cookie") == ""
    open_conversation(a, world.conversation)
    # Bob opens the conversation Alice started and sees her online
    open_conversation(b, world.conversation)
    b.wait(lambda: b.find("#conversation-title").text == "Alice", what="title Alice")
    b.wait(lambda: b.find("#presence").get_attribute("data-online") == "true", what="online")

    # typing shows on the other side
    a.find("#composer-input").send_keys("hel")
    b.wait(lambda: b.find("#typing").text == "Alice is typing…", what="typing indicator")
    a.find("#composer-input").clear()
    send(a, "hello Bob")
    b.wait(lambda: message_texts(b)[-1:] == ["hello Bob"], what="Bob receives")
    # Bob has it open, so it is read: Alice's receipt turns to "read"
    a.wait(lambda: a.texts("#messages li.mine .receipt")[-1:] == ["read"], what="read receipt")
    b.wait(lambda: b.texts("#typing") == [""], what="typing stopped")

    send(b, "hi Alice")
    a.wait(lambda: message_texts(a)[-2:] == ["hello Bob", "hi Alice"], what="Alice receives")

    # markup is text: shown as typed, never parsed
    send(a, XSS)
    b.wait(lambda: message_texts(b)[-1:] == [XSS], what="xss as text")
    assert b.all("#messages img") == [] and a.all("#messages img") == []
    assert b.js("return document.title") != "pwned"

    # edit and delete own messages, seen live by the other
    a.wait(lambda: a.js(OWN_BUTTON, "hello Bob", ".edit"), what="edit own message")
    field = a.find("#messages .edit-input")
    field.clear()
    field.send_keys("hello Bob (edited)")
    a.click("#messages .edit-form button[type=submit]")
    b.wait(lambda: message_texts(b)[-3:][0] == "hello Bob (edited)", what="edit seen")
    b.wait(lambda: "(edited)" in b.texts("#messages li.message .edited"), what="edited mark")
    a.wait(lambda: a.js(OWN_BUTTON, XSS, ".delete"), what="delete own message")
    b.wait(lambda: message_texts(b)[-1] == "message deleted", what="delete seen")

    # the conversation list: last message and, for a conversation not open, unread
    preview = f'#conversation-list li.conversation[data-id="{world.conversation}"] .preview'
    a.wait(lambda: a.texts(preview) == ["message deleted"], what="preview")
    assert_clean(a, b)


def test_unread_counts_and_newest_first(world: World) -> None:
    a, b = world.a, world.b
    # Bob starts a group with Alice: it jumps to the top of Alice's list, unread
    b.fill("#new-group input[name=name]", "Team <b>")
    b.fill("#new-group input[name=emails]", "alice@example.com")
    b.click("#new-group button[type=submit]")
    b.wait(lambda: b.find("#conversation-title").text == "Team <b>", what="group open")
    send(b, "group hello")
    a.wait(lambda: a.texts("#conversation-list li.conversation .title")[:1] == ["Team <b>"],
           what="group first")
    a.wait(lambda: a.texts("#conversation-list li.conversation .unread") == ["1"], what="unread")
    # members: Bob (owner) sees both; Alice leaves; Bob sees the change
    b.click("#show-members")
    b.wait(lambda: len(b.all("#member-list li.member")) == 2, what="two members")
    group = b.js("return document.querySelector('#conversation-list li.active').dataset.id")
    open_conversation(a, group)
    a.wait(lambda: a.texts("#conversation-list li.conversation .unread") == [], what="read")
    a.click("#leave")
    a.wait(lambda: not a.all(f'#conversation-list li[data-id="{group}"]'), what="left")
    b.click("#show-members")
    b.wait(lambda: len(b.all("#member-list li.member")) == 1, what="one member left")
    # Bob adds her back by email: the group returns to her list; then he removes her
    b.fill("#add-member input[name=email]", "alice@example.com")
    b.click("#add-member button[type=submit]")
    b.wait(lambda: len(b.all("#member-list li.member")) == 2, what="added back")
    a.find(f'#conversation-list li[data-id="{group}"]')
    b.click("#member-list li.member .remove-member")
    b.wait(lambda: len(b.all("#member-list li.member")) == 1, what="removed")
    a.wait(lambda: not a.all(f'#conversation-list li[data-id="{group}"]'), what="gone at A")
    # back to the direct conversation for the next tests
    open_conversation(a, world.conversation)
    open_conversation(b, world.conversation)
    assert_clean(a, b)


def _ids(browser: Browser) -> list[str]:
    return list(browser.js("return [...document.querySelectorAll("
                           "'#messages li.message:not(.pending)')].map(e => e.dataset.id)"))


def _seqs(browser: Browser) -> list[int]:
    return [int(s) for s in browser.js(
        "return [...document.querySelectorAll('#messages li.message:not(.pending)')]"
        ".map(e => e.dataset.seq)")]


def test_offline_browser_catches_up_without_gap_or_duplicate(world: World) -> None:
    a, b, proxy = world.a, world.b, world.proxy
    open_conversation(a, world.conversation)
    open_conversation(b, world.conversation)
    a.read_log()
    b.read_log()
    before = message_texts(b)

    # 1. Bob's answers stop reaching him: his send gets to the server, its ack is lost
    proxy.cut(up=False, down=True)
    send(b, "sent while the ack is lost")
    a.wait(lambda: message_texts(a)[-1:] == ["sent while the ack is lost"], what="A gets it")
    # the heartbeat notices the dead socket although it still looks open
    b.wait(lambda: b.find("#conn-status").text != "online", timeout=10, what="B offline")

    # 2. then nothing gets through at all; Alice keeps writing
    proxy.cut(up=True, down=True)
    for i in range(1, 4):
        send(a, f"while you were away {i}")
    send(b, "queued while offline")
    a.wait(lambda: message_texts(a)[-1:] == ["while you were away 3"], what="A's sends")

    # 3. the network returns: reconnect, catch up by seq, resend the outbox
    proxy.restore()
    b.wait(lambda: b.find("#conn-status").text == "online", timeout=15, what="B online")
    expected = [*before, "sent while the ack is lost", "while you were away 1",
                "while you were away 2", "while you were away 3", "queued while offline"]
    b.wait(lambda: message_texts(b) == expected, timeout=15, what="B caught up")
    a.wait(lambda: message_texts(a) == expected, timeout=15, what="A has B's resend once")
    assert b.all("#messages li.pending") == []
    seqs = _seqs(b)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate: {seqs}"
    assert _seqs(a) == seqs

    for browser in (a, b):
        entries = browser.read_log()
        csp = [e for e in entries if "Content Security Policy" in str(e.get("message"))]
        errors = [e for e in entries if e.get("level") == "SEVERE"
                  and not NETWORK_NOISE.search(str(e.get("message")))]
        assert csp == [] and errors == [], (browser.name, csp, errors)


def test_resync_event_makes_the_client_catch_up(world: World) -> None:
    """The server drops a slow socket's queue and sends `resync`: the client fills the
    gap from history although its socket never closed."""
    a, b, server = world.a, world.b, world.server
    open_conversation(a, world.conversation)
    open_conversation(b, world.conversation)
    kernel = server.app[KERNEL]
    bob = server.call(_user_id(kernel, "bob@example.com"))
    topic = f"conversation:{world.conversation}"
    server.call(kernel.ws.remove_user_from_topic(bob, topic))  # Bob's events are lost
    send(a, "missed 1")
    send(a, "missed 2")
    a.wait(lambda: message_texts(a)[-1:] == ["missed 2"], what="A sent")
    assert "missed 2" not in message_texts(b)
    server.call(kernel.ws.add_user_to_topic(bob, topic))
    server.call(kernel.ws.publish(f"user:{bob}", "resync", {"reason": "slow_consumer",
                                                             "dropped": 2}))
    b.wait(lambda: message_texts(b)[-2:] == ["missed 1", "missed 2"], what="B caught up")
    assert b.find("#conn-status").text == "online"
    seqs = _seqs(b)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert_clean(a, b)


async def _user_id(kernel: Any, email: str) -> str:
    from sqlalchemy import select

    from secureconnect.auth import models as m

    async with kernel.db.connect() as conn:
        return str((await conn.execute(select(m.users.c.id).where(
            m.users.c.email == email))).scalar_one())


def test_poll_created_and_voted_updates_live(world: World) -> None:
    a, b = world.a, world.b
    open_conversation(a, world.conversation)
    open_conversation(b, world.conversation)
    a.click("#new-poll")
    a.fill("#poll-form input[name=question]", "Lunch?")
    a.fill("#poll-form textarea[name=options]", "Pizza\nSushi")
    a.click("#create-poll")
    card = '#messages .poll[data-poll-id]:not([data-poll-id=""])'
    b.wait(lambda: b.texts(f"{card} .option-text") == ["Pizza", "Sushi"], what="poll at B")

    def votes(browser: Browser) -> list[str]:
        return browser.js("return [...document.querySelectorAll(arguments[0])]"
                          ".map(e => e.dataset.votes)", f"{card} .votes")

    b.click(f'{card} .poll-option:nth-of-type(2) input')
    b.click(f"{card} button.vote")
    a.wait(lambda: votes(a) == ["0", "1"], what="A sees B's vote")
    # B changes the vote: A sees it move
    b.wait(lambda: b.find(f"{card} button.vote").text == "Change vote", what="voted")
    b.click(f'{card} .poll-option:nth-of-type(1) input')
    b.click(f"{card} button.vote")
    a.wait(lambda: votes(a) == ["1", "0"], what="A sees the change")
    # A closes it: B sees it closed and can no longer vote
    a.click(f"{card} .close-poll")
    b.wait(lambda: b.find(f"{card} .poll-status").get_attribute("data-status") == "closed",
           what="closed at B")
    assert b.all(f"{card} button.vote") == []
    assert_clean(a, b)


def test_history_scroll_back_by_cursor(world: World) -> None:
    a, b, server = world.a, world.b, world.server

    async def post_many() -> None:
        async with aiohttp.ClientSession(server.url) as http:
            async with http.post("/v1/auth/login", json={
                    "email": "alice@example.com", "password": DEFAULT_PASSWORD}) as resp:
                token = (await resp.json())["access_token"]
            for i in range(25):
                async with http.post(f"/v1/conversations/{world.conversation}/messages",
                                     json={"content": f"old {i}"},
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == 201

    server.call(post_many())
    a.wait(lambda: message_texts(a)[-1:] == ["old 24"], what="A has them live")
    # Bob reloads: tokens were in memory only, so he signs in again
    b.open("/")
    b.fill("#sign-in input[name=email]", "bob@example.com")
    b.fill("#sign-in input[name=password]", DEFAULT_PASSWORD)
    b.click("#sign-in button[type=submit]")
    open_conversation(b, world.conversation)
    b.wait(lambda: len(message_texts(b)) == 10, what="one page")  # [web] history_page
    assert message_texts(b) == message_texts(a)[-10:]
    while b.find("#load-older").is_displayed():
        shown = len(message_texts(b))
        b.click("#load-older")
        b.wait(lambda n=shown: len(message_texts(b)) > n or not b.find("#load-older")
               .is_displayed(), what="older page")
    assert _ids(b) == _ids(a)
    assert _seqs(b) == list(range(1, len(_seqs(b)) + 1))
    assert_clean(a, b)


def test_access_tokens_rotate_before_they_expire(world: World) -> None:
    """[auth] access_token_ttl is 30 s here: Alice signed in more than that ago by the
    end of this test, and keeps working because the client rotated her tokens."""
    a, b, server = world.a, world.b, world.server
    kernel = server.app[KERNEL]

    async def generations() -> int:
        from sqlalchemy import func, select

        from secureconnect.auth import models as m

        async with kernel.db.connect() as conn:
            return int((await conn.execute(select(func.max(
                m.refresh_tokens.c.generation)))).scalar_one() or 0)

    a.wait(lambda: server.call(generations()) >= 2, timeout=45, what="a rotated refresh token")
    a.wait(lambda: a.find("#conn-status").text == "online", what="still online")
    # both have the conversation open (also when xdist runs this test first on a worker)
    open_conversation(a, world.conversation)
    open_conversation(b, world.conversation)
    send(a, "after rotation")
    b.wait(lambda: message_texts(b)[-1:] == ["after rotation"], what="still delivered")
    assert_clean(a, b)
