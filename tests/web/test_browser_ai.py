"""The AI assistant in the web client (headless Chromium, the real local model):
nothing before opt-in; after it, reply suggestions appear as chips for an incoming
message and one click sends one; "Summarize" shows the conversation's summary."""

from __future__ import annotations

import pytest

from .harness import Browser
from .test_browser_chat import assert_clean, message_texts, open_conversation, send, sign_up

pytestmark = pytest.mark.slow

LIVE_SETTINGS = {"ai": {"local_executor": "thread", "local_nice": 0}}

LINES = [
    "Can we meet tomorrow at 10 to plan the release of version 2.0?",
    "The release notes still need a section about the new search.",
    "I will ask Dana to review the migration guide before Friday.",
    "Thanks a lot for fixing the login bug so quickly!",
]


@pytest.fixture(scope="module")
def pair(live, browsers) -> tuple[Browser, Browser, str]:
    server, _ = live
    a = browsers(server.url, "alice")
    b = browsers(server.url, "bob")
    sign_up(a, "Alice", "alice@example.com")
    sign_up(b, "Bob", "bob@example.com")
    a.fill("#new-direct input[name=email]", "bob@example.com")
    a.click("#new-direct button[type=submit]")
    a.wait(lambda: a.find("#conversation-title").text == "Bob", what="title Bob")
    conversation = a.js("return document.querySelector('#conversation-list li.active').dataset.id")
    b.find(f'#conversation-list li.conversation[data-id="{conversation}"]')
    return a, b, str(conversation)


def test_opt_in_reply_chips_and_summary(pair) -> None:
    a, b, conversation = pair
    open_conversation(a, conversation)
    open_conversation(b, conversation)
    # off by default: the server refuses to read anything
    assert a.find("#ai-enabled").is_selected() is False
    a.click("#ai-summarize")
    a.wait(lambda: a.find("#ai-summary-error").get_attribute("data-code") == "ai_not_enabled",
           what="refused before opt-in")
    a.read_log()  # the refused request's 403 is logged by the browser on purpose

    a.click("#ai-enabled")
    a.wait(lambda: a.find("#ai-enabled").is_selected() and a.find("#ai-enabled").is_enabled(),
           what="opted in")
    for line in LINES:
        send(b, line)
    a.wait(lambda: message_texts(a)[-1:] == LINES[-1:], what="Alice receives")
    # suggestions for Bob's latest message, as chips; one click sends one
    chips = "#ai-replies button.chip"
    a.wait(lambda: len(a.all(chips)) >= 1, timeout=60, what="reply chips")
    reply = a.all(chips)[0].text
    assert reply
    a.all(chips)[0].click()
    b.wait(lambda: message_texts(b)[-1:] == [reply], what="Bob gets the chosen reply")
    a.wait(lambda: not a.all(chips), what="chips cleared after sending")

    a.click("#ai-summarize")
    a.wait(lambda: len(a.all("#ai-summary li")) >= 1, timeout=60, what="a summary")
    summary = " ".join(a.texts("#ai-summary li"))
    assert any(word in summary for word in ("release", "migration", "search", "login"))
    assert "message(s) read" in a.find("#ai-summary .hint").text
    assert_clean(a, b)
