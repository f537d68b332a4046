"""``server.uvloop``: the loop ``secureconnect serve`` runs on."""

from __future__ import annotations

import pytest

from secureconnect.app import serving_loop
from secureconnect.errors import ConfigError
from secureconnect.testing import make_settings


def test_uvloop_by_default_and_asyncio_when_switched_off() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = serving_loop(make_settings({}))
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        assert loop is not None
        loop.close()
    assert serving_loop(make_settings({"server": {"uvloop": False}})) is None


def test_a_non_boolean_uvloop_setting_is_refused(sc_app) -> None:
    with pytest.raises(ConfigError, match="uvloop"):
        sc_app({"server": {"uvloop": "sometimes"}})
