"""Calls in the web client: two headless Chromiums with fake camera and microphone
ring, answer and reach RTCPeerConnection state ``connected`` over our signaling, see
each other's video frames and media state, hang up; a declined call ends for the caller."""

from __future__ import annotations

from typing import Any

import pytest

from .harness import Browser
from .test_browser_chat import assert_clean, open_conversation, sign_up

pytestmark = pytest.mark.slow

# the page's own module instance (same URL), so the test reads the live peer connections
PEER_STATES = """
const done = arguments[arguments.length - 1];
import('/static/plugins/calls/calls.js').then((m) => done(m.peerStates()), (e) => done(String(e)));
"""
REMOTE_FRAMES = """
const tile = document.querySelector(`#call .tile[data-user-id="${arguments[0]}"] video`);
return tile ? tile.videoWidth * tile.videoHeight : 0;
"""


@pytest.fixture(scope="module")
def pair(live, browsers) -> tuple[Browser, Browser, str, dict[str, str]]:
    server, proxy = live
    a = browsers(server.url, "alice")
    b = browsers(proxy.url, "bob")
    sign_up(a, "Alice", "alice@example.com")
    sign_up(b, "Bob", "bob@example.com")
    a.fill("#new-direct input[name=email]", "bob@example.com")
    a.click("#new-direct button[type=submit]")
    a.wait(lambda: a.find("#conversation-title").text == "Bob", what="title Bob")
    conversation = a.js("return document.querySelector('#conversation-list li.active').dataset.id")
    b.find(f'#conversation-list li.conversation[data-id="{conversation}"]')
    ids = {"a": _me(a), "b": _me(b)}
    return a, b, str(conversation), ids


def _me(browser: Browser) -> str:
    done = """
    const done = arguments[arguments.length - 1];
    import('/static/web/app.js').then((m) => done(m.app.me.id));
    """
    return str(browser.driver.execute_async_script(done))


def _states(browser: Browser) -> Any:
    return browser.driver.execute_async_script(PEER_STATES)


def test_a_call_connects_with_real_media_and_media_state(pair) -> None:
    a, b, conversation, ids = pair
    open_conversation(a, conversation)
    open_conversation(b, conversation)
    a.click("#start-call")
    a.wait(lambda: a.find("#call-status").text == "calling…", what="calling")
    b.click("#call-answer")
    a.wait(lambda: _states(a) == {ids["b"]: "connected"}, timeout=30, what="A connected")
    b.wait(lambda: _states(b) == {ids["a"]: "connected"}, timeout=30, what="B connected")
    # the fake camera's frames arrive on both sides
    b.wait(lambda: b.js(REMOTE_FRAMES, ids["a"]) > 0, timeout=20, what="B sees A's video")
    a.wait(lambda: a.js(REMOTE_FRAMES, ids["b"]) > 0, timeout=20, what="A sees B's video")
    assert a.find("#call-status").text == "in call"

    tile = f'#call .tile[data-user-id="{ids["a"]}"]'
    a.click("#call-mute")
    b.wait(lambda: b.find(tile).get_attribute("data-audio") == "false", what="A muted")
    a.click("#call-hand")
    b.wait(lambda: b.find(tile).get_attribute("data-hand") == "true", what="A's hand up")
    assert "hand raised" in b.find(f"{tile} .media-state").text
    a.click("#call-camera")
    b.wait(lambda: b.find(tile).get_attribute("data-video") == "false", what="A camera off")

    # Bob hangs up: a 1-1 call ends for both
    b.click("#call-leave")
    a.wait(lambda: a.js("return document.getElementById('call').hidden") is True,
           what="A's call ended")
    assert _states(a) == {} and _states(b) == {}
    assert_clean(a, b)


def test_a_declined_call_ends_for_the_caller(pair) -> None:
    a, b, conversation, _ = pair
    open_conversation(a, conversation)
    a.click("#start-call")
    b.click("#call-decline")
    a.wait(lambda: a.js("return document.getElementById('call').hidden") is True,
           what="A's call ended")
    b.wait(lambda: not b.all("#incoming-call"), what="B's ringing stopped")
    assert_clean(a, b)


def test_the_caller_hanging_up_stops_the_ringing(pair) -> None:
    a, b, conversation, _ = pair
    open_conversation(a, conversation)
    a.click("#start-call")
    b.find("#incoming-call")
    a.click("#call-leave")
    b.wait(lambda: not b.all("#incoming-call"), what="B's ringing stopped")
    assert_clean(a, b)


def test_a_voice_call_carries_audio_only(pair) -> None:
    a, b, conversation, ids = pair
    open_conversation(a, conversation)
    a.click("#start-voice-call")
    b.click("#call-answer")
    b.wait(lambda: _states(b) == {ids["a"]: "connected"}, timeout=30, what="B connected")
    kinds = f"""
    const v = document.querySelector('#call .tile[data-user-id="{ids["a"]}"] video');
    return v && v.srcObject ? v.srcObject.getTracks().map(t => t.kind).sort() : [];
    """
    b.wait(lambda: b.js(kinds) == ["audio"], what="an audio track only")
    a.click("#call-leave")
    b.wait(lambda: b.js("return document.getElementById('call').hidden") is True,
           what="B's call ended")
    assert_clean(a, b)
