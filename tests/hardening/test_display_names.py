"""Display names that render blank or reorder text are refused (issue 22, item 19)."""

from __future__ import annotations

import pytest

from secureconnect.testing.accounts import DEFAULT_PASSWORD, unique_email

BAD = [
    "\ufeffadmin",          # byte-order mark (Cf)
    "\u061c",               # Arabic letter mark (Cf)
    "\u3164",               # Hangul filler (Lo, renders blank)
    "ad\U000e0041min",      # tag character (Cf)
    "\u2800",               # braille blank
    "x\u00ady",             # soft hyphen (Cf)
    "admin\u2067",          # bidi isolate
    "\ue000boss",           # private use
    "\u115f\u1160",         # Hangul choseong/jungseong fillers
]


@pytest.mark.parametrize("name", BAD)
async def test_invisible_display_names_are_422(sc_client, name):
    client = await sc_client()
    r = await client.post("/v1/auth/register", json={
        "email": unique_email(), "password": DEFAULT_PASSWORD, "display_name": name})
    assert r.status == 422, await r.text()
    assert (await r.json())["code"] == "invalid_display_name"


@pytest.mark.parametrize("name", ["Zoë", "李小龙", "محمد", "Ana María", "👩‍🚀"[:1] + "Sam"])
async def test_ordinary_names_pass(sc_client, name):
    client = await sc_client()
    r = await client.post("/v1/auth/register", json={
        "email": unique_email(), "password": DEFAULT_PASSWORD, "display_name": name})
    assert r.status == 201, await r.text()
    assert (await r.json())["display_name"] == name
