"""The web plugin over HTTP (no browser): pages, CSP, static files, panels, admin API."""

from __future__ import annotations

import re

import pytest

from secureconnect.app import KERNEL
from secureconnect.auth.service import create_user
from secureconnect.errors import ConfigError
from secureconnect.testing import make_settings
from secureconnect.testing.accounts import DEFAULT_PASSWORD, login, register_and_login
from secureconnect.web.markdown import render
from secureconnect.web.panels import WebPanel

from ..kernel import kitchen_sink

ADMIN_GETS = ["/v1/admin/plugins", "/v1/admin/health", "/v1/admin/metrics",
              "/v1/admin/config", "/v1/admin/users", "/v1/admin/jobs", "/v1/admin/audit"]
ADMIN_POSTS = ["/v1/admin/jobs/auth.cleanup/run", "/v1/admin/users/x/sign-out",
               "/v1/admin/users/x/disable", "/v1/admin/users/x/enable"]
ADMIN_OTHER = [("PUT", "/v1/admin/users/x/role"), ("DELETE", "/v1/admin/users/x")]
# plugins' admin routes (tests/plugins/push/test_web_routes.py checks them in depth)
PLUGIN_ADMIN = ["/v1/admin/push/dead-letters", "/v1/admin/push/dead-letters/retry",
                "/v1/admin/push/dead-letters/x"]


async def admin_headers(client) -> dict[str, str]:
    kernel = client.server.app[KERNEL]
    await create_user(kernel, "root@example.com", DEFAULT_PASSWORD, "Root", admin=True)
    tokens = await login(client, "root@example.com")
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_hook_sc_web_panels(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    html = await (await client.get("/")).text()
    assert '<script type="module" src="/static/plugins/kitchen-sink/sink.js">' in html
    assert '<link rel="stylesheet" href="/static/plugins/kitchen-sink/sink.css">' in html
    resp = await client.get("/static/plugins/kitchen-sink/sink.js")
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    assert "kitchen-sink-panel" in await resp.text()


@pytest.mark.parametrize("path", ["/", "/admin", "/verify-email?token=t",
                                  "/reset-password?token=t", "/docs", "/docs/websocket"])
async def test_pages_carry_a_strict_csp(sc_client, path):
    client = await sc_client()
    resp = await client.get(path)
    assert resp.status == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in resp.headers
    # no inline code anywhere: every script is an external file
    html = await resp.text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)


async def test_api_keeps_the_kernel_default_csp(sc_client):
    client = await sc_client()
    resp = await client.get("/health/live")
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("path", ["/static/web/../../app.py", "/static/web/%2e%2e/app.py",
                                  "/static/web/nope.js", "/static/plugins/nope/x.js",
                                  "/static/plugins/kitchen-sink/../test_hooks.py",
                                  "/static/swagger/../core.py"])
async def test_static_files_never_leave_their_folder(sc_client, path):
    client = await sc_client(plugins=[kitchen_sink])
    resp = await client.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_swagger_assets_are_served_locally(sc_client):
    client = await sc_client()
    html = await (await client.get("/docs")).text()
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/swagger/swagger-ui-bundle.js" in srcs
    for src in srcs:
        assert src.startswith("/") or src.startswith("data:"), src
        if src.startswith("/static/"):
            assert (await client.get(src)).status == 200, src


async def test_websocket_docs_render_as_html(sc_client):
    client = await sc_client()
    html = await (await client.get("/docs/websocket")).text()
    assert '<h1 id="websocket-gateway">WebSocket gateway</h1>' in html
    assert "<table>" in html and "<code>resync</code>" in html


def test_markdown_escapes_text_and_drops_unsafe_links():
    out = render("# <b>x</b>\n\nsee [me](javascript:alert(1)) and [ok](/docs) `<i>`\n")
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert "javascript:" not in out and '<a href="/docs">ok</a>' in out
    assert "<code>&lt;i&gt;</code>" in out


def test_panel_name_clash_names_both_plugins():
    class Other:
        PLUGIN_NAME = "other_sink"

        @staticmethod
        def sc_web_panels(kernel):
            return [WebPanel("kitchen-sink", kitchen_sink.Path(kitchen_sink.__file__).parent)]

    from secureconnect import hookimpl
    from secureconnect.app import create_app

    Other.sc_web_panels = hookimpl(Other.sc_web_panels)
    with pytest.raises(ConfigError, match=r"'kitchen-sink' is declared by both plugin "
                                          r"'kitchen_sink' and plugin 'other_sink'"):
        create_app(make_settings(), plugins=[kitchen_sink, Other])


def test_panel_listing_a_missing_file_stops_start_up(tmp_path):
    from secureconnect import hookimpl
    from secureconnect.app import create_app

    class Broken:
        PLUGIN_NAME = "broken"

        @staticmethod
        @hookimpl
        def sc_web_panels(kernel):
            return [WebPanel("broken", tmp_path, scripts=("missing.js",))]

    with pytest.raises(ConfigError, match=r"'missing\.js', which is not a file"):
        create_app(make_settings(), plugins=[Broken])


def test_a_panel_connect_source_must_be_an_origin(tmp_path):
    from secureconnect import hookimpl
    from secureconnect.app import create_app

    class Loose:
        PLUGIN_NAME = "loose"

        @staticmethod
        @hookimpl
        def sc_web_panels(kernel):
            return [WebPanel("loose", tmp_path, connect_src=("https://a.example; script-src *",))]

    with pytest.raises(ConfigError, match="is not an origin"):
        create_app(make_settings(), plugins=[Loose])


async def test_a_non_admin_gets_403_on_every_admin_route(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    for path in ADMIN_GETS:
        resp = await client.get(path, headers=user.headers)
        assert resp.status == 403, path
        assert (await resp.json())["code"] == "admin_only"
    for path in ADMIN_POSTS:
        resp = await client.post(path, headers=user.headers)
        assert resp.status == 403, path
    for method, path in ADMIN_OTHER:
        resp = await client.request(method, path, headers=user.headers, json={"role": "admin"})
        assert resp.status == 403, path
        assert (await resp.json())["code"] == "admin_only"
    for path in ADMIN_GETS:
        assert (await client.get(path)).status == 401, path


async def test_every_admin_route_is_in_openapi_and_admin_only(sc_client):
    client = await sc_client()
    spec = await (await client.get("/openapi.json")).json()
    admin_paths = {p for p in spec["paths"] if p.startswith("/v1/admin/")}
    listed = {re.sub(r"/auth\.cleanup/|/x/|/x$", "/{}/", p).rstrip("/")
              for p in ADMIN_GETS + ADMIN_POSTS + [p for _, p in ADMIN_OTHER] + PLUGIN_ADMIN}
    assert {re.sub(r"\{[^}]+\}", "{}", p) for p in admin_paths} == listed
    for path in admin_paths:
        for op in spec["paths"][path].values():
            assert "403" in op["responses"] and op["security"] == [{"bearerAuth": []}]


async def test_admin_api_reads_and_audits(sc_client):
    client = await sc_client({"plugins": {"example": False}}, plugins=[kitchen_sink])
    headers = await admin_headers(client)
    plugins = (await (await client.get("/v1/admin/plugins", headers=headers)).json())["plugins"]
    by_name = {p["name"]: p for p in plugins}
    assert by_name["example"]["enabled"] is False
    assert by_name["kitchen_sink"]["enabled"] is True
    assert "sc_web_panels" in by_name["kitchen_sink"]["hooks"]
    assert by_name["kitchen_sink"]["panels"] == ["kitchen-sink"]
    assert by_name["web"]["panels"] == []

    settings = (await (await client.get("/v1/admin/config", headers=headers)).json())["settings"]
    assert settings["auth"]["jwt_secret"] in ("", "***")
    assert settings["web"]["heartbeat_interval"] == 15.0

    found = (await (await client.get("/v1/admin/users?q=ROOT", headers=headers)).json())["users"]
    assert [u["email"] for u in found] == ["root@example.com"]
    assert (await (await client.get("/v1/admin/users?q=%25", headers=headers)).json()) == {
        "users": []}

    jobs = (await (await client.get("/v1/admin/jobs", headers=headers)).json())["jobs"]
    sweep = next(j for j in jobs if j["name"] == "sink.sweep")
    assert sweep["plugin"] == "kitchen_sink" and sweep["last_run"] is None
    ran = await (await client.post("/v1/admin/jobs/sink.sweep/run", headers=headers)).json()
    assert ran["last_run"]["status"] == "success" and ran["last_run"]["result"] == 7
    assert ("swept",) in client.server.app[KERNEL].state["sink"]
    assert (await client.post("/v1/admin/jobs/nope/run", headers=headers)).status == 404

    sample = await (await client.get("/v1/admin/metrics", headers=headers)).json()
    assert sample["metrics"]["requests_total"] >= 5
    buckets = sample["latency_buckets"]
    assert buckets["+Inf"] >= 5 and buckets["+Inf"] >= buckets["0.1"] > 0

    audit = (await (await client.get("/v1/admin/audit", headers=headers)).json())["entries"]
    actions = [e["action"] for e in audit]
    assert actions[0] == "audit.read"
    assert {"jobs.run", "config.read", "users.search"} <= set(actions)
    # the console's periodic status reads are not audited
    assert not {"metrics.read", "health.read", "plugins.list", "jobs.list"} & set(actions)
    run = next(e for e in audit if e["action"] == "jobs.run" and e["target"] == "sink.sweep")
    assert run["request_id"] and run["actor"]


async def test_admin_signs_a_user_out_everywhere(sc_client, sc_ws):
    client = await sc_client()
    headers = await admin_headers(client)
    user = await register_and_login(client)
    resp = await client.post(f"/v1/admin/users/{user.user_id}/sign-out", headers=headers)
    assert (await resp.json()) == {"sessions_revoked": 1}
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 401
    missing = await client.post("/v1/admin/users/nobody/sign-out", headers=headers)
    assert missing.status == 404


async def test_admin_disables_enables_promotes_and_deletes_accounts(sc_client, sc_ws):
    client = await sc_client()
    headers = await admin_headers(client)
    user = await register_and_login(client, display_name="Victim")
    base = f"/v1/admin/users/{user.user_id}"

    resp = await client.post(f"{base}/disable", headers=headers)
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    # the session ended at once; signing in is refused, and only with the right password
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 401
    refused = await client.post("/v1/auth/login", json={"email": user.email,
                                                        "password": user.password})
    assert refused.status == 403 and (await refused.json())["code"] == "account_disabled"
    wrong = await client.post("/v1/auth/login", json={"email": user.email, "password": "nope" * 4})
    assert wrong.status == 401
    resp = await client.post(f"{base}/enable", headers=headers)
    assert (await resp.json())["disabled"] is False
    tokens = await login(client, user.email)
    user_headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    # promotion: the next rotation carries the role; demotion ends the sessions
    resp = await client.put(f"{base}/role", headers=headers, json={"role": "admin"})
    assert (await resp.json())["role"] == "admin"
    pair = await (await client.post("/v1/auth/refresh", json={
        "refresh_token": tokens["refresh_token"]})).json()
    promoted = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await client.get("/v1/admin/users", headers=promoted)).status == 200
    resp = await client.put(f"{base}/role", headers=headers, json={"role": "user"})
    assert (await resp.json())["role"] == "user"
    assert (await client.get("/v1/admin/users", headers=promoted)).status == 401
    bad = await client.put(f"{base}/role", headers=headers, json={"role": "root"})
    assert bad.status in (400, 422)

    # an admin cannot lock themselves out
    root = (await (await client.get("/v1/admin/users?q=root", headers=headers)).json())["users"][0]
    for method, path, body in (("POST", "disable", None), ("DELETE", "", None),
                               ("PUT", "role", {"role": "user"})):
        resp = await client.request(method, f"/v1/admin/users/{root['id']}/{path}".rstrip("/"),
                                    headers=headers, json=body)
        assert resp.status == 409 and (await resp.json())["code"] == "own_account", path

    # deletion: gone for the directory, the login and every session
    assert (await client.delete(base, headers=headers)).status == 204
    assert (await client.get("/v1/users/me", headers=user_headers)).status == 401
    assert (await client.get(f"/v1/users/{user.user_id}", headers=headers)).status == 404
    assert (await client.delete(base, headers=headers)).status == 404
    for action in ("disable", "enable"):
        assert (await client.post(f"/v1/admin/users/nobody/{action}", headers=headers)
                ).status == 404
    audit = (await (await client.get("/v1/admin/audit", headers=headers)).json())["entries"]
    assert {"users.disable", "users.enable", "users.role", "users.delete"} <= {
        e["action"] for e in audit}


async def test_a_user_deletes_their_own_account(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    other = await register_and_login(client)
    wrong = await client.delete("/v1/users/me", headers=user.headers, json={"password": "x" * 12})
    assert wrong.status == 403 and (await wrong.json())["code"] == "invalid_password"
    assert (await client.delete("/v1/users/me", headers=user.headers, json={})).status in (400, 422)
    ok = await client.delete("/v1/users/me", headers=user.headers, json={"password": user.password})
    assert ok.status == 204
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 401
    assert (await client.get(f"/v1/users/{user.user_id}", headers=other.headers)).status == 404
    again = await client.post("/v1/auth/login", json={"email": user.email,
                                                      "password": user.password})
    assert again.status == 401


async def test_the_client_heartbeat_is_answered(sc_client, sc_ws):
    client = await sc_client()
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    answer = await ws.request("web.ping", {})
    assert answer["type"] == "ack" and answer["data"] == {"pong": True}


async def test_docs_and_admin_can_be_switched_off(sc_client):
    client = await sc_client({"web": {"docs": False, "admin": False}})
    assert (await client.get("/docs")).status == 404
    assert (await client.get("/admin")).status == 404
    assert (await client.get("/v1/admin/plugins")).status in (401, 404)
    assert (await client.get("/")).status == 200


def _directive(csp: str, name: str) -> list[str]:
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"no {name} in {csp}")


async def test_a_malformed_host_never_reaches_the_csp(sc_client):
    client = await sc_client({"plugins": {"drive": False}})
    resp = await client.get("/", headers={"Host": "evil; script-src *"})
    csp = resp.headers["Content-Security-Policy"]
    assert "evil" not in csp and _directive(csp, "connect-src") == ["'self'"]
    good = await client.get("/", headers={"Host": "chat.example.com:8443"})
    assert _directive(good.headers["Content-Security-Policy"], "connect-src") == [
        "'self'", "ws://chat.example.com:8443"]


async def test_panels_add_their_connect_origins_to_the_csp(sc_client):
    """drive's uploads and downloads go to drive.public_url (or the S3 endpoint)."""
    client = await sc_client({"drive": {"public_url": "https://files.example.com:9000/base"}})
    csp = (await client.get("/", headers={"Host": "chat.example.com"})).headers[
        "Content-Security-Policy"]
    assert _directive(csp, "connect-src") == [
        "'self'", "ws://chat.example.com", "https://files.example.com:9000"]
