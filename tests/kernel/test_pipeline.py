from __future__ import annotations

import asyncio

from aiohttp import web

from secureconnect import Problem, RouteTable, hookimpl


class SlowPlugin:
    PLUGIN_NAME = "slowpoke"
    routes = RouteTable(tag="test")

    @staticmethod
    @routes.get("/v1/test/slow", auth=False, timeout=0.2)
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response({})

    @staticmethod
    @routes.get("/v1/test/boom", auth=False)
    async def boom(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("secret internals: db password hunter2")

    @staticmethod
    @routes.get("/v1/test/teapot", auth=False)
    async def teapot(request: web.Request) -> web.StreamResponse:
        raise Problem("short and stout", code="teapot", status=418, title="I'm a teapot")

    @hookimpl
    def sc_routes(self) -> RouteTable:
        return self.routes


async def test_live_ready_metrics(sc_client):
    client = await sc_client()
    r = await client.get("/health/live")
    assert r.status == 200
    r = await client.get("/health/ready")
    assert r.status == 200, await r.text()
    assert (await r.json())["checks"]["database"]["status"] == "ok"
    r = await client.get("/metrics")
    body = await r.text()
    sample = 'request_duration_seconds_count{method="GET",path="/health/live",status="200"}'
    assert f"{sample} 1.0" in body
    assert "\nrequest_in_flight 1.0\n" in body  # the /metrics request itself


async def test_route_timeout_is_504_problem_and_counted(sc_client):
    client = await sc_client(plugins=[SlowPlugin()])
    r = await client.get("/v1/test/slow")
    assert r.status == 504
    assert r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == "request_timeout"
    assert body["request_id"] == r.headers["X-Request-ID"]
    metrics = await (await client.get("/metrics")).text()
    assert "request_timeout_total 1.0" in metrics


async def test_crash_is_500_problem_without_internals(sc_client):
    client = await sc_client(plugins=[SlowPlugin()])
    r = await client.get("/v1/test/boom", headers={"X-Request-ID": "req-123"})
    assert r.status == 500
    body = await r.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "req-123"
    assert "hunter2" not in await r.text() and "Traceback" not in await r.text()


async def test_aiohttp_404_405_are_problems(sc_client):
    client = await sc_client(plugins=[SlowPlugin()])
    r = await client.get("/nope")
    assert r.status == 404 and (await r.json())["code"] == "not_found"
    assert r.content_type == "application/problem+json"
    r = await client.post("/health/live")
    assert r.status == 405 and (await r.json())["code"] == "method_not_allowed"
    r = await client.get("/v1/test/teapot")
    assert r.status == 418 and (await r.json())["code"] == "teapot"


async def test_security_headers_on_every_response(sc_client):
    client = await sc_client()
    for path in ("/health/live", "/missing"):
        r = await client.get(path)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src" in r.headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in r.headers
    client = await sc_client({"http": {"behind_tls": True}})
    r = await client.get("/health/live")
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_body_limit_413(sc_client):
    client = await sc_client({"http": {"max_body_size": 2048}})
    r = await client.post("/health/live", data=b"x" * 4096)
    assert r.status == 413
    assert (await r.json())["code"] == "payload_too_large"


async def test_cors(sc_client):
    client = await sc_client({"cors": {"allow_origins": ["https://app.example"]}})
    r = await client.options("/health/live", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    r = await client.get("/health/live", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_metrics_token(sc_client):
    client = await sc_client({"metrics": {"token": "t0ken"}})
    r = await client.get("/metrics")
    assert r.status == 401
    r = await client.get("/metrics", headers={"Authorization": "Bearer t0ken"})
    assert r.status == 200


async def test_request_id_is_echoed_or_minted(sc_client):
    client = await sc_client()
    r = await client.get("/health/live", headers={"X-Request-ID": "abc-1"})
    assert r.headers["X-Request-ID"] == "abc-1"
    r = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["X-Request-ID"] != "bad id\twith junk"
    assert len(r.headers["X-Request-ID"]) == 32


async def test_json_logs_carry_the_request_id(sc_client, capsys):
    import logging

    from secureconnect.logs import configure_logging

    client = await sc_client(plugins=[SlowPlugin()])
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", "json")
    try:
        await client.get("/v1/test/boom", headers={"X-Request-ID": "trace-me"})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    import json

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    crash = [entry for entry in lines if entry.get("request_id") == "trace-me"]
    assert crash and crash[0]["level"] == "ERROR"
    assert "hunter2" in crash[0]["exc"]  # the log has the details the client never sees
