"""Admin console, API docs and the mailed links in real headless Chromium (one browser,
one app server for the module)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.auth.service import create_user
from secureconnect.testing.accounts import DEFAULT_PASSWORD

from .harness import Browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(live, browsers) -> Browser:
    server, _ = live
    return browsers(server.url, "admin")


def kernel_of(live: Any) -> Any:
    server, _ = live
    assert server.app is not None
    return server.app[KERNEL]


def mailed(live: Any, email: str, purpose: str, timeout: float = 10.0) -> str:
    # mails are sent after the answer (a reset's lookup too): wait for it to arrive
    deadline = time.monotonic() + timeout
    while True:
        mails = [m for m in kernel_of(live).auth.mailer.outbox
                 if m.to == email and m.tags.get("purpose") == purpose]
        if mails or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mails, f"no {purpose} mail to {email}"
    return str(mails[-1].tags["token"])


def sign_in(browser: Browser, email: str, password: str = DEFAULT_PASSWORD) -> None:
    browser.fill("#sign-in input[name=email]", email)
    browser.fill("#sign-in input[name=password]", password)
    browser.click("#sign-in button[type=submit]")
    browser.wait(lambda: browser.find("#me").text != "", what="signed in")


def sign_out(browser: Browser) -> None:
    browser.click("#sign-out")
    browser.find("#sign-in")


def assert_clean(browser: Browser) -> None:
    assert browser.problems() == []


def test_mailed_verification_and_reset_links_work(live, browser: Browser) -> None:
    browser.open("/")
    browser.click("#to-sign-up")
    browser.fill("#sign-up input[name=display_name]", "Carol")
    browser.fill("#sign-up input[name=email]", "carol@example.com")
    browser.fill("#sign-up input[name=password]", DEFAULT_PASSWORD)
    browser.click("#sign-up button[type=submit]")
    browser.wait(lambda: browser.find("#me").text == "Carol", what="signed up")

    token = mailed(live, "carol@example.com", "verify_email")
    browser.open(f"/verify-email?token={token}")
    result = browser.find("#verify-result")
    browser.wait(lambda: result.get_attribute("data-ok") == "true", what="verified")
    assert "carol@example.com is verified" in result.text
    assert "token" not in browser.driver.current_url  # taken out of the address bar
    browser.open(f"/verify-email?token={token}")  # single use
    browser.wait(lambda: browser.find("#verify-result").get_attribute("data-ok") == "false",
                 what="used link refused")
    browser.read_log()  # the refused link's 400 is logged by the browser on purpose

    browser.open("/")
    browser.click("#to-forgot")
    browser.fill("#forgot input[name=email]", "carol@example.com")
    browser.click("#forgot button[type=submit]")
    browser.find("#forgot-done")
    token = mailed(live, "carol@example.com", "password_reset")
    browser.open(f"/reset-password?token={token}")
    browser.fill("#reset-password input[name=new_password]", "a new passphrase 42")
    browser.click("#reset-password button[type=submit]")
    browser.find("#reset-done")
    browser.open("/")
    sign_in(browser, "carol@example.com", "a new passphrase 42")
    sign_out(browser)
    assert_clean(browser)


def test_admin_console_for_admins_only(live, browser: Browser) -> None:
    kernel = kernel_of(live)
    server, _ = live
    # the module's server is one per xdist worker: Carol (signed up and reset by the mail
    # test) and Root exist here only if those tests ran on this worker first
    if not server.call(_count_users(kernel, "root@example.com")):
        server.call(create_user(kernel, "root@example.com", DEFAULT_PASSWORD, "Root", admin=True))
    if not server.call(_count_users(kernel, "carol@example.com")):
        server.call(create_user(kernel, "carol@example.com", "a new passphrase 42", "Carol"))

    # a non-admin reaches the page but not the console (the API answers 403)
    browser.open("/admin")
    sign_in(browser, "carol@example.com", "a new passphrase 42")
    browser.find("#admin-denied")
    assert browser.all("#admin-plugins") == []
    sign_out(browser)

    # an admin signed in to the client switches to the console in place
    browser.open("/")
    sign_in(browser, "root@example.com")
    browser.find("#conversation-list")
    browser.click("#nav-admin")
    assert browser.driver.current_url.endswith("/admin")
    rows = '#admin-plugins tr.plugin[data-name="{}"]'
    browser.wait(lambda: browser.find(rows.format("example")).get_attribute("data-enabled")
                 == "false", what="example shown disabled")
    assert browser.find(rows.format("example") + " td.enabled").text == "disabled"
    assert browser.find(rows.format("chat")).get_attribute("data-enabled") == "true"
    assert "sc_web_panels" in browser.find(rows.format("chat") + " td.hooks").text

    browser.wait(lambda: {"root@example.com", "carol@example.com"} <= set(
        browser.js("return [...document.querySelectorAll('#admin-users tr.user')]"
                   ".map(e => e.dataset.email)")), what="users listed")
    browser.fill("#user-search input[name=q]", "car")
    browser.click("#user-search button[type=submit]")
    browser.wait(lambda: browser.js("return [...document.querySelectorAll('#admin-users "
                                    "tr.user')].map(e => e.dataset.email)")
                 == ["carol@example.com"], what="search")

    job = '#admin-jobs tr.job[data-name="auth.cleanup_expired_tokens"]'
    assert browser.find(job + " td.last-run").text == "never"
    browser.click(job + " button.run-job")
    browser.wait(lambda: browser.find(job + " td.last-run").get_attribute("data-status")
                 == "success", what="job ran")
    browser.find("#admin-config")
    browser.click("#nav-client")  # and back, still signed in
    browser.find("#conversation-list")
    assert browser.find("#me").text == "Root"
    browser.driver.back()
    browser.find("#admin-plugins")
    browser.wait(lambda: browser.find("#admin-ready").get_attribute("data-ready") == "true",
                 what="health")
    entries = list(kernel.state["web.audit"])
    assert any(e["action"] == "jobs.run" and e["target"] == "auth.cleanup_expired_tokens"
               for e in entries)
    assert_clean(browser)


def test_profile_rename_and_account_deletion(live, browser: Browser) -> None:
    browser.open("/")
    browser.click("#to-sign-up")
    browser.fill("#sign-up input[name=display_name]", "Erin")
    browser.fill("#sign-up input[name=email]", "erin@example.com")
    browser.fill("#sign-up input[name=password]", DEFAULT_PASSWORD)
    browser.click("#sign-up button[type=submit]")
    browser.wait(lambda: browser.find("#me").text == "Erin", what="signed up")
    browser.click("#profile summary")
    browser.fill("#profile-form input[name=display_name]", "  Erin   B ")
    browser.click("#profile-form button[type=submit]")
    browser.wait(lambda: browser.find("#me").text == "Erin B", what="renamed")
    assert browser.find("#profile-result").text == "saved"

    browser.click("#show-delete-account")
    browser.fill("#delete-account input[name=password]", "not my password")
    browser.click("#delete-account button[type=submit]")
    browser.wait(lambda: browser.find("#delete-account-result").text != "", what="refused")
    browser.read_log()  # the refused attempt's 403 is logged by the browser on purpose
    browser.fill("#delete-account input[name=password]", DEFAULT_PASSWORD)
    browser.click("#delete-account button[type=submit]")
    browser.find("#sign-in")
    assert server_count(live, "erin@example.com") == 0
    assert_clean(browser)


def server_count(live: Any, email: str) -> int:
    server, _ = live
    return int(server.call(_count_users(kernel_of(live), email)))


USER_ROW = '#admin-users tr.user[data-email="{}"]'


def test_admin_console_manages_accounts(live, browser: Browser) -> None:
    kernel = kernel_of(live)
    server, _ = live
    server.call(create_user(kernel, "dave@example.com", DEFAULT_PASSWORD, "Dave"))
    if not server.call(_count_users(kernel, "root@example.com")):  # alone on a worker
        server.call(create_user(kernel, "root@example.com", DEFAULT_PASSWORD, "Root", admin=True))
    browser.open("/admin")
    sign_in(browser, "root@example.com")
    dave = USER_ROW.format("dave@example.com")
    root = USER_ROW.format("root@example.com")
    browser.find(dave)
    # one's own account cannot be disabled, demoted or deleted from the console
    assert all(not b.is_enabled() for b in browser.all(
        f"{root} button.toggle-disabled, {root} button.toggle-role, {root} button.delete-user"))

    browser.click(f"{dave} button.toggle-disabled")
    browser.wait(lambda: browser.find(dave).get_attribute("data-disabled") == "true",
                 what="Dave disabled")
    assert browser.find(f"{dave} td.state").text == "disabled"
    browser.click(f"{dave} button.toggle-disabled")
    browser.wait(lambda: browser.find(dave).get_attribute("data-disabled") == "false",
                 what="Dave enabled")
    browser.click(f"{dave} button.toggle-role")
    browser.wait(lambda: browser.find(dave).get_attribute("data-role") == "admin",
                 what="Dave admin")
    browser.click(f"{dave} button.delete-user")
    browser.wait(lambda: browser.find(f"{dave} button.delete-user").text == "Confirm delete",
                 what="confirm step")
    assert browser.all(dave)  # nothing happened yet
    browser.click(f"{dave} button.delete-user")
    browser.wait(lambda: not browser.all(dave), what="Dave deleted")
    assert server.call(_count_users(kernel, "dave@example.com")) == 0
    actions = [e["action"] for e in kernel.state["web.audit"]]
    assert {"users.disable", "users.enable", "users.role", "users.delete"} <= set(actions)
    sign_out(browser)
    assert_clean(browser)


async def _count_users(kernel: Any, email: str) -> int:
    from sqlalchemy import func, select

    from secureconnect.auth import models as m

    async with kernel.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(m.users)
                                       .where(m.users.c.email == email))).scalar_one())


def test_docs_list_every_enabled_plugins_routes(live, browser: Browser) -> None:
    server, _ = live
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as resp:
        spec = json.loads(resp.read())
    browser.open("/docs")
    browser.find(".swagger-ui .opblock")
    wanted = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    shown = browser.wait(lambda: {tuple(x) for x in browser.js(
        "return [...document.querySelectorAll('.opblock-summary')].map(e => ["
        "e.querySelector('.opblock-summary-method').textContent,"
        "e.querySelector('.opblock-summary-path').dataset.path])")} or None, what="operations")
    assert shown == wanted
    tags = {op["tags"][0] for ops in spec["paths"].values() for op in ops.values()}
    assert {"chat", "polls", "auth", "admin", "kernel", "video", "drive", "users"} <= tags
    assert ("POST", "/v1/conversations/{conversation_id}/polls") in shown

    browser.open("/docs/websocket")
    assert browser.find("article.markdown h1").text == "WebSocket gateway"
    assert_clean(browser)
