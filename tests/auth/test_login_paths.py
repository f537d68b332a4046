"""Login's branches one by one over HTTP: the length cap's boundary, a disabled
account (told only to whoever knows the password), a hash with old cost parameters
re-hashed on success, malformed input — each with its status, code and metric."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from sqlalchemy import select, update

from secureconnect.app import KERNEL
from secureconnect.auth import models as m
from secureconnect.testing.accounts import register_and_login


async def _login(client, email: str, password: str) -> tuple[int, str, str]:
    r = await client.post("/v1/auth/login", json={"email": email, "password": password})
    body = await r.json()
    return r.status, body.get("code", ""), body.get("detail", "")


def _attempts(kernel, result: str) -> float:
    return kernel.metrics.value("auth_attempts_total", {"result": result})


async def test_a_password_of_exactly_the_maximum_length_signs_in(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    longest = "L" * 256
    user = await register_and_login(client, password=longest)
    assert (await _login(client, user.email, longest))[0] == 200
    assert await _login(client, user.email, longest + "L") == (
        401, "invalid_credentials", "the email or password is wrong")
    assert _attempts(kernel, "invalid_credentials") == 1


async def test_a_disabled_account_is_told_only_with_the_right_password(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    await kernel.auth.set_disabled(user.user_id, True)
    before = _attempts(kernel, "invalid_credentials")
    assert await _login(client, user.email, "wrong password!!") == (
        401, "invalid_credentials", "the email or password is wrong")
    assert _attempts(kernel, "invalid_credentials") == before + 1
    assert await _login(client, user.email, user.password) == (
        403, "account_disabled", "this account is disabled; ask an administrator")
    assert _attempts(kernel, "disabled") == 1
    await kernel.auth.set_disabled(user.user_id, False)
    assert (await _login(client, user.email, user.password))[0] == 200


async def test_a_hash_with_old_parameters_is_replaced_on_login(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    old = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    old_hash = old.hash(user.password)
    async with kernel.db.connect() as conn:
        await conn.execute(update(m.users).where(m.users.c.id == user.user_id)
                           .values(password_hash=old_hash))
    assert kernel.auth.passwords.needs_rehash(old_hash)
    assert (await _login(client, user.email, user.password))[0] == 200
    async with kernel.db.connect() as conn:
        stored = (await conn.execute(select(m.users.c.password_hash)
                                     .where(m.users.c.id == user.user_id))).scalar_one()
    assert stored != old_hash and not kernel.auth.passwords.needs_rehash(stored)
    assert await kernel.auth.passwords.verify(stored, user.password)
    # only this account's hash changed, and the new one signs in
    assert (await _login(client, user.email, user.password))[0] == 200


async def test_a_malformed_email_is_invalid_input(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    status, code, _ = await _login(client, "not an email", "whatever-password")
    assert (status, code) == (422, "invalid_email")
    assert _attempts(kernel, "invalid_input") == 1
    assert _attempts(kernel, "invalid_credentials") == 0
