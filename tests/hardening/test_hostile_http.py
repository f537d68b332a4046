"""Malformed HTTP, CORS on errors, what the service reveals about itself, and what
the outbox logs (issue 22, items 16, 21, 22, 23)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from secureconnect.config import load_settings
from secureconnect.testing.accounts import register_and_login

from .rawhttp import raw_request

SECURITY = ("x-content-type-options", "x-frame-options", "content-security-policy",
            "referrer-policy")

MALFORMED = {
    "nul in a header": b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-A: a\x00b",
    "16 KB header": b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000,
    "2,000 headers": b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
                     + b"\r\n".join(b"X-H%d: v" % i for i in range(2000)),
    "non-UTF-8 path": b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x",
    "bad method": b"G\x01T / HTTP/1.1\r\nHost: x",
}


async def test_malformed_http_is_4xx_with_security_headers_and_no_traceback(sc_client,
                                                                            caplog):
    client = await sc_client()
    caplog.set_level(logging.DEBUG)
    for name, head in MALFORMED.items():
        caplog.clear()
        r = await raw_request(client, head)
        assert 400 <= r.status < 500, (name, r.status, r.body)
        missing = [h for h in SECURITY if h not in r.headers]
        assert not missing, (name, missing, r.headers)
        assert r.headers.get("server") == "SecureConnect", name
        errors = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert not errors, (name, [rec.getMessage() for rec in errors])
        assert not any(rec.exc_info for rec in caplog.records), name
    # the server still serves after all of that
    assert (await client.get("/health/live")).status == 200


async def test_server_header_has_no_versions(sc_client):
    client = await sc_client()
    for path in ("/health/live", "/nope", "/v1/users/me"):
        r = await client.get(path)
        assert r.headers["Server"] == "SecureConnect", path


async def test_cors_headers_on_error_responses_and_vary_origin(sc_client):
    origin = "https://app.example.com"
    client = await sc_client({"cors": {"allow_origins": [origin]}})
    for path, status in (("/v1/users/me", 401), ("/nope", 404), ("/health/live", 200)):
        r = await client.get(path, headers={"Origin": origin})
        assert r.status == status
        assert r.headers.get("Access-Control-Allow-Origin") == origin, path
        assert "X-Request-ID" in r.headers.get("Access-Control-Expose-Headers", "")
        assert "Origin" in r.headers.getall("Vary", []) or "Origin" in r.headers.get(
            "Vary", ""), path
    r = await client.post("/v1/auth/login", data=b"{", headers={
        "Origin": origin, "Content-Type": "application/json"})
    assert r.status == 400 and r.headers.get("Access-Control-Allow-Origin") == origin
    # another origin: no grant, but still Vary so a cache never mixes the two answers
    r = await client.get("/health/live", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Origin" in r.headers.get("Vary", "")
    r = await client.get("/health/live")
    assert "Origin" in r.headers.get("Vary", "")


def test_production_defaults_expose_nothing_about_the_build():
    prod = load_settings(env="production")
    assert prod.metrics.require_token is True
    assert prod.status.details is False
    dev = load_settings(env="development")
    assert dev.metrics.require_token is False and dev.status.details is True


async def test_metrics_need_a_token_when_required(sc_client):
    client = await sc_client({"metrics": {"require_token": True}})
    assert (await client.get("/metrics")).status == 404
    client = await sc_client({"metrics": {"require_token": True, "token": "s3cret-metrics"}})
    assert (await client.get("/metrics")).status == 401
    r = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert r.status == 200 and "request_in_flight" in await r.text()


async def test_status_without_details_hides_version_and_plugins(sc_client):
    from secureconnect import __version__

    client = await sc_client({"status": {"details": False}})
    html = await (await client.get("/status")).text()
    assert __version__ not in html and "Plugins" not in html and "polls" not in html
    assert "ready" in html
    client = await sc_client()
    html = await (await client.get("/status")).text()
    assert f"Version {__version__}" in html and "polls" in html


async def test_outbox_does_not_log_links_outside_development(sc_client, caplog):
    client = await sc_client()
    caplog.set_level(logging.DEBUG)
    user = await register_and_login(client)
    r = await client.post("/v1/auth/password-reset", json={"email": user.email})
    assert r.status == 202
    from secureconnect.app import KERNEL

    kernel = client.app[KERNEL]
    await kernel.auth.mailer.drain()
    tokens = [m.tags["token"] for m in kernel.auth.mailer.outbox]
    assert len(tokens) >= 2  # verification + reset
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "outbox backend" in text
    for token in tokens:
        assert token not in text


async def test_outbox_logs_links_in_development():
    from secureconnect.auth.email import build_sender

    settings = load_settings(env="development")
    sender = build_sender(settings.auth, "development")
    assert getattr(sender, "log_bodies", None) is True
    sender = build_sender(settings.auth, "production")
    assert getattr(sender, "log_bodies", None) is False



async def test_a_client_gone_mid_body_is_no_error_and_counted_as_499(sc_client, caplog):
    """A client that closes its connection while its body is read (a load tool
    stopping, a phone losing its network) is nothing the server did wrong: no ERROR
    line, no traceback, and the request is counted with nginx's 499."""
    client = await sc_client()
    # as served by `secureconnect serve` (aiohttp's default): a handler is not cancelled
    # when its client leaves, it sees the loss (aiohttp's test server cancels instead)
    client.server.runner.server.handler_cancellation = False
    caplog.set_level(logging.DEBUG)
    host, port = client.server.host, client.server.port
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                 b'{"email": "a')
    await writer.drain()
    # gone at once: a reset, as a killed client or a lost network does
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.close()

    async def counted() -> str:
        while True:
            text = await (await client.get("/metrics")).text()
            lines = [line for line in text.splitlines()
                     if line.startswith("request_duration_seconds_count")
                     and 'status="499"' in line and "/v1/auth/login" in line]
            if lines:
                return lines[0]
            await asyncio.sleep(0.05)

    line = await asyncio.wait_for(counted(), 10)
    assert line.endswith(" 1.0"), line
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert not errors, errors
    assert not any(rec.exc_info for rec in caplog.records)
    assert (await client.get("/health/live")).status == 200
