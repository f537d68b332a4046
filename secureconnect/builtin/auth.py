"""Kernel plugin ``auth``: accounts, sessions, tokens, rate limits (placeholder)."""

from __future__ import annotations

from dynaconf import Validator

from .. import hookimpl


@hookimpl(trylast=True)
def sc_settings_validators() -> list[Validator]:
    return []
