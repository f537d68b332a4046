"""The password length policy and argon2 verification at unit level: each limit
exactly, the refusal's code, status, message and limit, and a corrupt stored hash."""

from __future__ import annotations

import logging

import pytest

from secureconnect.auth.passwords import PasswordHashing, PasswordPolicy
from secureconnect.errors import ValidationFailed

POLICY = PasswordPolicy(min_length=8, max_length=12)


def _refusal(password: str, **kwargs: str) -> tuple[int, str, str, dict]:
    with pytest.raises(ValidationFailed) as caught:
        POLICY.check(password, **kwargs)
    e = caught.value
    return e.status, e.code, e.detail, e.extra


def test_the_limits_are_inclusive() -> None:
    POLICY.check("x" * 8)
    POLICY.check("x" * 12)


def test_too_short_and_too_long_name_the_rule_and_the_field() -> None:
    assert _refusal("x" * 7) == (
        422, "password_too_short",
        "password is too short: use at least 8 characters (got 7)", {"min_length": 8})
    assert _refusal("x" * 13, field="new_password") == (
        422, "password_too_long",
        "new_password is too long: use at most 12 characters (got 13)", {"max_length": 12})


@pytest.fixture
def hashing():
    h = PasswordHashing(time_cost=1, memory_cost=8, parallelism=1, workers=1, max_pending=4)
    yield h
    h.close()


async def test_verify_accepts_the_password_and_nothing_else(hashing, caplog) -> None:
    stored = await hashing.hash("correct horse")
    assert await hashing.verify(stored, "correct horse") is True
    assert await hashing.verify(stored, "correct horsE") is False
    with caplog.at_level(logging.WARNING, logger="secureconnect.auth.passwords"):
        assert await hashing.verify("$argon2id$v=19$corrupt", "correct horse") is False
        assert await hashing.verify("not a hash at all", "correct horse") is False
    assert [r.getMessage() for r in caplog.records] == [
        "a stored password hash could not be verified (corrupt or unknown)"] * 2
