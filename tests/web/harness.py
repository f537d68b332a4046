"""Browser-test harness: a real app server in a thread, a TCP proxy whose network can
be cut, and headless Chromium driven by Selenium through Debian's chromedriver.

* :class:`LiveServer` serves ``create_app(settings)`` on a loopback port from its own
  event loop; :meth:`LiveServer.call` runs a coroutine there (creating an admin,
  reading the mail outbox).
* :class:`FlakyProxy` forwards a second port to the server. ``cut()`` turns it into a
  network that loses every packet: open connections stay open but deliver nothing
  either way (the "dead socket after sleep"), new ones hang. ``restore()`` resets
  the dead connections and forwards again.
* :class:`Browser` wraps one Chrome session with helpers that wait for conditions
  and collect the console log (CSP violations and errors included).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from secureconnect.app import create_app
from secureconnect.testing.services import free_port

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_available() -> bool:
    return Path(CHROMEDRIVER).is_file() and shutil.which("chromium") is not None


class LiveServer:
    def __init__(self, settings: Any, plugins: Iterable[object] = (), port: int | None = None
                 ) -> None:
        self.settings = settings
        self.plugins = list(plugins)
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="live-server")
        self.app: web.Application | None = None
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        self.call(self._start())

    async def _start(self) -> None:
        self.app = create_app(self.settings, plugins=self.plugins)
        self.runner = web.AppRunner(self.app, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.runner is not None:
            self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class FlakyProxy:
    """A TCP forwarder to the live server whose network the test can cut."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.port = free_port()
        self.online = True
        self.dead: set[asyncio.StreamWriter] = set()
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.cut_up = self.cut_down = True
        #: seconds of delay per forwarded read (up to 64 KiB): a slow network
        self.throttle = 0.0
        self._listener: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        async def listen() -> None:
            self._listener = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self.server.call(listen())

    def stop(self) -> None:
        async def close() -> None:
            if self._listener is not None:
                self._listener.close()
            for pair in list(self.pairs):
                for writer in pair:
                    writer.transport.abort()

        self.server.call(close())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        except OSError:
            writer.close()
            return
        ends = (writer, up_writer)
        self.pairs.add(ends)
        if not self.online:
            self.dead.update(self._directions(writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.throttle:
                        await asyncio.sleep(self.throttle)
                    if dst in self.dead:
                        continue  # lost on the way
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if dst in self.dead:
                    dst.transport.abort()
                else:
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.pairs.discard(ends)
        for end in ends:
            self.dead.discard(end)

    def cut(self, *, up: bool = True, down: bool = True) -> None:
        """Lose every packet from now on: towards the server (``up``), towards the
        browser (``down``) or both."""

        async def cut() -> None:
            self.online = False
            self.cut_up, self.cut_down = up, down
            for browser_end, server_end in list(self.pairs):
                self.dead.update(self._directions(browser_end, server_end))

        self.server.call(cut())

    def _directions(self, browser_end: asyncio.StreamWriter, server_end: asyncio.StreamWriter
                    ) -> list[asyncio.StreamWriter]:
        return [w for w, lost in ((server_end, self.cut_up), (browser_end, self.cut_down))
                if lost]

    def restore(self) -> None:
        async def restore() -> None:
            self.online = True
            dead, self.dead = set(self.dead), set()
            # what was cut is gone for good: reset both ends of those connections
            for pair in list(self.pairs):
                if dead.intersection(pair):
                    for writer in pair:
                        writer.transport.abort()

        self.server.call(restore())


class Browser:
    """One headless Chromium session."""

    def __init__(self, base_url: str, name: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--no-first-run", "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    # calls: camera and microphone are granted and fake (a test pattern
                    # and a beep), so two browsers can exchange real media
                    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    "--autoplay-policy=no-user-gesture-required"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)
        self.base_url = base_url
        self.name = name
        self.log: list[dict[str, Any]] = []

    # -- navigation and waiting ---------------------------------------------------------
    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait(self, condition: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                value = condition()
                if value:
                    return value
                last = value
            except Exception as exc:  # stale elements while the page re-renders
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"[{self.name}] timed out after {timeout} s waiting for "
                                     f"{what or condition}: last {last!r}")
            time.sleep(0.05)

    def find(self, css: str, timeout: float = 10.0) -> Any:
        from selenium.webdriver.common.by import By

        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), timeout,
                         f"element {css}")

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def texts(self, css: str) -> list[str]:
        return [str(t) for t in self.js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)]

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def fill(self, css: str, text: str) -> None:
        """Type ``text`` into a field, again if a re-render replaced it meanwhile."""
        self.wait(lambda: self._fill(css, text), what=f"filled {css}")

    def _fill(self, css: str, text: str) -> bool:
        el = self.find(css)
        el.clear()
        el.send_keys(text)
        return bool(el.get_attribute("value") == text)

    def click(self, css: str) -> None:
        self.wait(lambda: self._click(css), what=f"clickable {css}")

    def _click(self, css: str) -> bool:
        self.find(css).click()
        return True

    def download_to(self, folder: str | Path) -> None:
        """Save downloads into ``folder`` without asking."""
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(folder), "eventsEnabled": True})

    # -- console log -----------------------------------------------------------------------
    def read_log(self) -> list[dict[str, Any]]:
        fresh = list(self.driver.get_log("browser"))
        self.log.extend(fresh)
        return fresh

    def problems(self, entries: list[dict[str, Any]] | None = None) -> list[str]:
        """Console errors and CSP violations among ``entries`` (default: new entries)."""
        entries = self.read_log() if entries is None else entries
        return [f"{e.get('level')}: {e.get('message')}" for e in entries
                if e.get("level") == "SEVERE" or "Content Security Policy" in
                str(e.get("message")) or "Refused to" in str(e.get("message"))]

    def screenshot_b64(self) -> str:
        return base64.b64encode(self.driver.get_screenshot_as_png()).decode()

    def quit(self) -> None:
        self.driver.quit()
