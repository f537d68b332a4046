"""Registration rules, email verification, password reset and the cleanup job."""

from __future__ import annotations

from datetime import timedelta

import pytest

from secureconnect.app import KERNEL
from secureconnect.auth.service import create_user, utcnow
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import (
    DEFAULT_PASSWORD,
    mailed_token,
    register,
    register_and_login,
    unique_email,
)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"email": "not-an-email", "password": DEFAULT_PASSWORD, "display_name": "x"},
            422,
            "invalid_email",
        ),
        (
            {"email": "a@example.com", "password": "short", "display_name": "x"},
            422,
            "password_too_short",
        ),
        (
            {"email": "a@example.com", "password": "p" * 257, "display_name": "x"},
            422,
            "password_too_long",
        ),
        (
            {"email": "a@example.com", "password": DEFAULT_PASSWORD, "display_name": "   "},
            422,
            "invalid_display_name",
        ),
        (
            {"email": "a@example.com", "password": DEFAULT_PASSWORD, "display_name": "n" * 65},
            422,
            "invalid_display_name",
        ),
        (
            {"email": "a@example.com", "password": DEFAULT_PASSWORD, "display_name": "bad\x00name"},
            422,
            "invalid_display_name",
        ),
        ({"email": "a@example.com", "password": DEFAULT_PASSWORD}, 422, "validation_error"),
        (
            {
                "email": "a@example.com",
                "password": DEFAULT_PASSWORD,
                "display_name": "x",
                "role": "admin",
            },
            422,
            "validation_error",
        ),
    ],
)
async def test_register_rejects_bad_input_with_a_clear_code(sc_client, body, status, code):
    client = await sc_client()
    r = await client.post("/v1/auth/register", json=body)
    assert r.status == status
    problem = await r.json()
    assert r.content_type == "application/problem+json"
    assert problem["code"] == code, problem
    if code.startswith("password_"):
        assert "characters" in problem["detail"]


async def test_duplicate_email_is_409_whatever_the_case(sc_client):
    client = await sc_client()
    email = unique_email()
    await register(client, email)
    r = await client.post(
        "/v1/auth/register",
        json={"email": email.upper(), "password": DEFAULT_PASSWORD, "display_name": "Twin"},
    )
    assert r.status == 409 and (await r.json())["code"] == "email_taken"


async def test_verify_email_with_the_mailed_token_once(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    token = await mailed_token(client, user.email, "verify_email")
    r = await client.post("/v1/auth/verify-email", json={"token": token})
    assert r.status == 200
    assert (await r.json())["email_verified"] is True
    me = await (await client.get("/v1/users/me", headers=user.headers)).json()
    assert me["email_verified"] is True and me["email_verified_at"]
    r = await client.post("/v1/auth/verify-email", json={"token": token})
    assert r.status == 400 and (await r.json())["code"] == "invalid_token"


async def test_password_reset_flow(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    r = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    other_session = await r.json()

    r = await client.post("/v1/auth/password-reset", json={"email": user.email})
    assert r.status == 202
    token = await mailed_token(client, user.email, "password_reset")

    new_password = "a brand new passphrase"
    r = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": new_password}
    )
    assert r.status == 204, await r.text()

    # every session of the account is gone: access tokens and refresh tokens
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 401
    r = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status == 401
    r = await client.post(
        "/v1/auth/refresh", json={"refresh_token": other_session["refresh_token"]}
    )
    assert r.status == 401
    # single use
    r = await client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": "yet another passphrase"},
    )
    assert r.status == 400 and (await r.json())["code"] == "invalid_token"
    # the new password works, the old one does not
    r = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert r.status == 401
    r = await client.post("/v1/auth/login", json={"email": user.email, "password": new_password})
    assert r.status == 200


async def test_password_reset_is_202_for_unknown_and_invalid_emails(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    for email in (unique_email(), "not an email"):
        r = await client.post("/v1/auth/password-reset", json={"email": email})
        assert r.status == 202
    await kernel.auth.mailer.drain()
    assert not [m for m in kernel.auth.mailer.outbox if m.tags.get("purpose") == "password_reset"]


async def test_expired_reset_token_is_rejected_and_cleaned_up(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    verification = await mailed_token(client, user.email, "verify_email")
    await client.post("/v1/auth/password-reset", json={"email": user.email})
    token = await mailed_token(client, user.email, "password_reset")

    # two hours later (reset links live one hour; verification links 24 h)
    later = utcnow() + timedelta(hours=2)
    kernel.auth.now = lambda: later
    r = await client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": "a brand new passphrase"},
    )
    assert r.status == 400 and (await r.json())["code"] == "token_expired"
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 200

    # the reset token goes (the verification token is still valid; on a shared
    # database other tests' expired tokens may go too)
    removed = await kernel.jobs.run("auth.cleanup_expired_tokens")
    assert removed >= 1
    metrics = await (await client.get("/metrics")).text()
    assert f"auth_cleanup_expired_tokens_total {float(removed)}" in metrics
    assert "auth_cleanup_failed_total 0.0" in metrics
    assert "auth_cleanup_duration_seconds_count 1.0" in metrics

    # once gone, the token is simply unknown
    r = await client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": "a brand new passphrase"},
    )
    assert r.status == 400 and (await r.json())["code"] == "invalid_token"

    # 25 hours: the verification token expires too
    much_later = utcnow() + timedelta(hours=25)
    kernel.auth.now = lambda: much_later
    removed_later = await kernel.jobs.run("auth.cleanup_expired_tokens")
    assert removed_later >= 1
    metrics = await (await client.get("/metrics")).text()
    assert f"auth_cleanup_expired_tokens_total {float(removed + removed_later)}" in metrics
    r = await client.post("/v1/auth/verify-email", json={"token": verification})
    assert r.status == 400 and (await r.json())["code"] == "invalid_token"


async def test_cleanup_failure_is_counted(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]

    async def broken(**_kwargs):
        raise RuntimeError("database gone")

    kernel.auth.delete_expired = broken
    assert await kernel.jobs.run("auth.cleanup_expired_tokens") is None
    metrics = await (await client.get("/metrics")).text()
    assert "auth_cleanup_failed_total 1.0" in metrics
    assert 'job_runs_total{job="auth.cleanup_expired_tokens",status="failed"} 1.0' in metrics


async def test_create_user_makes_admins(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    email = unique_email("root")
    created = await create_user(kernel, email, DEFAULT_PASSWORD, "Root", admin=True)
    assert created["role"] == "admin" and created["email"] == email
    assert created["email_verified"] is True
    r = await client.post("/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD})
    assert r.status == 200
    access_token = (await r.json())["access_token"]
    headers = {"Authorization": f"Bearer {access_token}"}
    assert (await (await client.get("/v1/users/me", headers=headers)).json())["role"] == "admin"
    assert (await kernel.auth.authenticate(access_token)).is_admin


async def test_create_user_without_admin_makes_a_plain_user(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    email = unique_email("plain")
    created = await create_user(kernel, email, DEFAULT_PASSWORD, "Plain")
    assert created["role"] == "user" and created["email"] == email
    r = await client.post("/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD})
    assert r.status == 200
    principal = await kernel.auth.authenticate((await r.json())["access_token"])
    assert principal.role == "user" and not principal.is_admin


async def test_registration_notifies_plugins(sc_client):
    seen: list[dict] = []

    class Listener:
        PLUGIN_NAME = "listener"

        from secureconnect import hookimpl

        @hookimpl
        def sc_user_registered(self, user):
            seen.append(user)

    client = await sc_client(plugins=[Listener()])
    user = await register_and_login(client)
    await wait_for(lambda: seen, message="sc_user_registered")
    assert seen[0]["id"] == user.user_id and "password_hash" not in seen[0]


async def test_reset_mails_per_account_are_limited_silently(sc_client):
    client = await sc_client(
        {"rate_limits": {"classes": {"password_reset": {"per_ip": "", "per_user": "2/hour"}}}}
    )
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    for _ in range(4):
        r = await client.post("/v1/auth/password-reset", json={"email": user.email})
        assert r.status == 202
    await kernel.auth.mailer.drain()
    resets = [m for m in kernel.auth.mailer.outbox if m.tags.get("purpose") == "password_reset"]
    assert len(resets) == 2
