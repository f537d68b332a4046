"""Files in the web client (headless Chromium): a 20 MB file is uploaded with visible
progress (resumable tus upload), shared into a conversation, and downloaded by the
other user with the same SHA-256."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from .harness import Browser
from .test_browser_chat import assert_clean, open_conversation, sign_up

pytestmark = pytest.mark.slow

SIZE = 20 * 1024 * 1024

# records every value the upload's progress bar shows (the `value` attribute reflects
# the property), so a fast loopback upload cannot hide its progress from the test
WATCH_PROGRESS = """
window.__progress = [];
new MutationObserver((records) => {
  for (const r of records) if (r.target.id === 'upload-progress')
    window.__progress.push(Number(r.target.getAttribute('value')));
}).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['value'] });
"""


@pytest.fixture(scope="module")
def pair(live, browsers) -> tuple[Browser, Browser, str]:
    """Alice reaches the server through the proxy (whose network a test slows and
    cuts), Bob directly."""
    server, proxy = live
    a = browsers(proxy.url, "alice")
    b = browsers(server.url, "bob")
    sign_up(a, "Alice", "alice@example.com")
    sign_up(b, "Bob", "bob@example.com")
    a.fill("#new-direct input[name=email]", "bob@example.com")
    a.click("#new-direct button[type=submit]")
    a.wait(lambda: a.find("#conversation-title").text == "Bob", what="title Bob")
    conversation = a.js("return document.querySelector('#conversation-list li.active').dataset.id")
    b.find(f'#conversation-list li.conversation[data-id="{conversation}"]')
    return a, b, str(conversation)


def _random_file(folder: Path, name: str) -> tuple[Path, str]:
    data = os.urandom(SIZE)
    path = folder / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _upload(a: Browser, path: Path) -> None:
    a.click("#attach-file")
    a.js(WATCH_PROGRESS)
    a.find("#file-input").send_keys(str(path))


def _progress(a: Browser) -> list[float]:
    return [float(v) for v in a.js("return window.__progress || []")]


def _download(b: Browser, name: str, folder: Path) -> Path:
    card = "#messages .file-card"
    b.wait(lambda: b.texts(f"{card} .file-name")[-1:] == [name], what=f"file message {name}")
    assert b.texts(f"{card} .file-size")[-1] == " · 20 MB"
    folder.mkdir()
    b.download_to(folder)
    b.js("[...document.querySelectorAll(arguments[0])].pop().click()", f"{card} button.download")
    target = folder / name
    b.wait(lambda: target.is_file() and target.stat().st_size == SIZE
           and not list(folder.glob("*.crdownload")), timeout=60, what="download finished")
    return target


def test_upload_with_progress_share_and_download_same_bytes(pair, tmp_path: Path) -> None:
    a, b, conversation = pair
    source, digest = _random_file(tmp_path, "big.bin")
    open_conversation(a, conversation)
    open_conversation(b, conversation)
    _upload(a, source)
    a.wait(lambda: a.find("#upload-status").get_attribute("data-state") == "done", timeout=120,
           what="upload shared")
    seen = _progress(a)
    assert any(0 < v < 1 for v in seen), f"no intermediate progress shown: {seen}"
    assert seen == sorted(seen) and seen[-1] == 1
    # Bob sees the file message live and downloads it
    target = _download(b, "big.bin", tmp_path / "bob-downloads")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert_clean(a, b)


def test_an_upload_resumes_after_the_network_dies(pair, live, tmp_path: Path) -> None:
    """The network goes dead mid-upload (packets lost, connections left open): the
    client gives the stalled chunk up, asks the server for its offset (tus HEAD) and
    goes on from there; the stored file has the exact bytes."""
    a, b, conversation = pair
    _, proxy = live
    source, digest = _random_file(tmp_path, "resumed.bin")
    open_conversation(a, conversation)
    open_conversation(b, conversation)
    proxy.throttle = 0.01  # ~6 MB/s: the test can cut while bytes are flowing
    try:
        _upload(a, source)
        a.wait(lambda: any(0.3 < v < 0.7 for v in _progress(a)), timeout=60, what="mid-upload")
        proxy.cut()
        before_cut = _progress(a)
        a.wait(lambda: a.find("#upload-status").text.endswith("%"), what="still uploading")
        time.sleep(2)
        proxy.restore()
    finally:
        proxy.throttle = 0.0
    a.wait(lambda: a.find("#upload-status").get_attribute("data-state") == "done", timeout=120,
           what="upload finished after the cut")
    seen = _progress(a)
    assert max(seen) == 1
    # resumed, not restarted: after the cut the bar never fell back by more than the
    # chunk that was in flight (4 MiB of 20)
    assert min(seen[len(before_cut):]) >= max(before_cut) - 0.21, (before_cut, seen)
    target = _download(b, "resumed.bin", tmp_path / "bob-downloads")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    noise = [p for p in a.problems() if "net::ERR_" not in p and "WebSocket" not in p
             and "Failed to load resource" not in p]
    assert noise == []
    assert_clean(b)
