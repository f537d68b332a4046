"""Fixtures of the browser tests: one app server, one cuttable proxy and the browsers
of a test module, shared by its tests (browsers are slow to start). On a failure the
screenshot (base64 PNG) and console log of every browser are printed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from secureconnect.testing import make_settings

from .harness import Browser, FlakyProxy, LiveServer, browser_available

REQUIRE = os.environ.get("SC_TEST_REQUIRE_SERVICES") == "1"


def _settings(tmp: str, **overrides: Any) -> Any:
    return make_settings(overrides, data_dir=tmp)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[LiveServer, FlakyProxy]]:
    """The module's app server (settings: the defaults below, then the module's
    ``LIVE_SETTINGS`` dict, if any) and its cuttable proxy."""
    if not browser_available():
        message = "chromium / chromedriver are not installed here (run `make services`)"
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    from secureconnect.testing.services import free_port

    port = free_port()
    base = {
        "app": {"public_url": f"http://127.0.0.1:{port}"},
        "rate_limits": {"enabled": False},
        "plugins": {"example": False},
        "web": {"heartbeat_interval": 1.0, "heartbeat_timeout": 1.5, "reconnect_max_delay": 2.0,
                "history_page": 10},
        "chat": {"typing_throttle": 0.5},
        # short-lived access tokens: the client must rotate them while the tests run
        "auth": {"access_token_ttl": 30},
    }
    tmp = str(tmp_path_factory.mktemp("web"))
    # a database file, as `make run` serves (the testing default is one in-memory
    # connection shared by every task, which real concurrent browsers outgrow)
    base["database"] = {"url": f"sqlite+aiosqlite:///{tmp}/web.db"}
    server = LiveServer(None, port=port)
    proxy = FlakyProxy(server)
    base["cors"] = {"allow_origins": [proxy.url]}
    base = _merge(base, getattr(request.module, "LIVE_SETTINGS", {}))
    server.settings = _settings(tmp, **base)
    server.start()
    proxy.start()
    yield server, proxy
    proxy.stop()
    server.stop()


_open: list[Browser] = []


@pytest.fixture(scope="module")
def browsers() -> Iterator[Callable[[str, str], Browser]]:
    made: list[Browser] = []

    def make(base_url: str, name: str) -> Browser:
        browser = Browser(base_url, name)
        made.append(browser)
        _open.append(browser)
        return browser

    yield make
    for browser in made:
        _open.remove(browser)
        browser.quit()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed and _open:
        for browser in _open:
            try:
                browser.read_log()
                shot = browser.screenshot_b64()
            except Exception as exc:  # the browser itself may be what failed
                shot = f"(no screenshot: {exc})"
            log = "\n".join(f"  {e.get('level')} {e.get('message')}" for e in browser.log[-80:])
            report.sections.append((f"browser {browser.name}: console log", log or "  (empty)"))
            report.sections.append((f"browser {browser.name}: screenshot (base64 PNG)", shot))
    return report
