"""The user directory: public profiles, lookup by email, name search among contacts,
profile edits; and the two hooks it asks plugins through."""

from __future__ import annotations

from typing import Any

from secureconnect.app import KERNEL
from secureconnect.plugins import switches_without
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import TestUser, register_and_login, unique_email
from tests.kernel import kitchen_sink


async def _group(client: Any, owner: TestUser, members: list[TestUser]) -> str:
    r = await client.post("/v1/conversations", headers=owner.headers, json={
        "type": "group", "participant_ids": [m.user_id for m in members], "name": "team"})
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def test_profile_is_public_and_never_shows_the_email(sc_client):
    client = await sc_client()
    alice = await register_and_login(client, display_name="Alice")
    bob = await register_and_login(client)
    r = await client.get(f"/v1/users/{alice.user_id}", headers=bob.headers)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body == {"id": alice.user_id, "display_name": "Alice", "avatar_file_id": None,
                    "presence": {"online": False, "last_seen_at": None}}
    assert alice.email not in await r.text()
    for missing in ("00000000-0000-0000-0000-000000000000", "not-an-id"):
        r = await client.get(f"/v1/users/{missing}", headers=bob.headers)
        assert r.status == 404 and (await r.json())["code"] == "user_not_found"
    assert (await client.get(f"/v1/users/{alice.user_id}")).status == 401


async def test_profile_shows_presence_from_chat(sc_client, sc_ws):
    client = await sc_client()
    alice, bob = await register_and_login(client), await register_and_login(client)
    await sc_ws(client, alice.access_token)

    async def online() -> bool:
        r = await client.get(f"/v1/users/{alice.user_id}", headers=bob.headers)
        return bool((await r.json())["presence"]["online"])

    await wait_for(online, message="alice shown online")


async def test_lookup_by_exact_normalised_email(sc_client):
    client = await sc_client()
    email = unique_email("Carol")
    carol = await register_and_login(client, email=email, display_name="Carol")
    bob = await register_and_login(client)
    r = await client.get("/v1/users", params={"email": f"  {email.upper()} "},
                         headers=bob.headers)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert [u["id"] for u in body["users"]] == [carol.user_id]
    assert "email" not in body["users"][0]
    # prefixes and other addresses find nothing
    for other in (email[1:], "nobody@example.com"):
        r = await client.get("/v1/users", params={"email": other}, headers=bob.headers)
        assert r.status == 200 and (await r.json())["users"] == []
    r = await client.get("/v1/users", params={"email": "not an address"}, headers=bob.headers)
    assert r.status == 422 and (await r.json())["code"] == "invalid_email"


async def test_lookup_by_email_has_its_own_rate_limit(sc_client):
    client = await sc_client({"rate_limits": {"classes": {
        "user_lookup": {"per_ip": "", "per_user": "3/minute"}}}})
    bob = await register_and_login(client)
    for _ in range(3):
        r = await client.get("/v1/users", params={"email": "x@example.com"}, headers=bob.headers)
        assert r.status == 200
    r = await client.get("/v1/users", params={"email": "x@example.com"}, headers=bob.headers)
    assert r.status == 429 and (await r.json())["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) > 0
    # a name search is another class and still works
    r = await client.get("/v1/users", params={"q": "x"}, headers=bob.headers)
    assert r.status == 200


async def test_query_needs_exactly_one_of_email_and_q(sc_client):
    client = await sc_client()
    bob = await register_and_login(client)
    for params in ({}, {"email": "a@example.com", "q": "a"}):
        r = await client.get("/v1/users", params=params, headers=bob.headers)
        assert r.status == 422 and (await r.json())["code"] == "invalid_query"
    r = await client.get("/v1/users", params={"q": "a", "limit": "0"}, headers=bob.headers)
    assert r.status == 422 and (await r.json())["code"] == "validation_error"
    r = await client.get("/v1/users", params={"q": "a", "cursor": "garbage!"},
                         headers=bob.headers)
    assert r.status == 422 and (await r.json())["code"] == "invalid_cursor"


async def test_name_search_only_among_people_sharing_a_conversation(sc_client):
    client = await sc_client()
    me = await register_and_login(client, display_name="Me")
    names = ["Anna", "anne", "Annabel", "Andrew", "Bob", "Ann_x"]
    mates = [await register_and_login(client, display_name=n) for n in names]
    stranger = await register_and_login(client, display_name="Annika")
    await _group(client, me, mates)
    r = await client.get("/v1/users", params={"q": "ann"}, headers=me.headers)
    assert r.status == 200, await r.text()
    found = [u["display_name"] for u in (await r.json())["users"]]
    # case-insensitive prefix, ordered by name; the stranger is not visible
    assert found == ["Ann_x", "Anna", "Annabel", "anne"]
    assert stranger.user_id not in {u["id"] for u in (await r.json())["users"]}
    # LIKE wildcards are literal
    r = await client.get("/v1/users", params={"q": "ann_"}, headers=me.headers)
    assert [u["display_name"] for u in (await r.json())["users"]] == ["Ann_x"]
    # paging: two per page, then the rest, then no cursor
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"q": "an", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/users", params=params, headers=me.headers)).json()
        seen += [u["display_name"] for u in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["Andrew", "Ann_x", "Anna", "Annabel", "anne"]
    # the stranger sees nobody
    r = await client.get("/v1/users", params={"q": "a"}, headers=stranger.headers)
    assert (await r.json())["users"] == []


async def test_patch_me_changes_name_and_picture(sc_client):
    client = await sc_client()
    me = await register_and_login(client, display_name="Old")
    file_id = "018f0000-0000-7000-8000-000000000001"
    r = await client.patch("/v1/users/me", json={"display_name": "  New   Name ",
                                                  "avatar_file_id": file_id},
                           headers=me.headers)
    assert r.status == 200, await r.text()
    assert (await r.json())["display_name"] == "New Name"
    assert (await r.json())["avatar_file_id"] == file_id
    r = await client.get("/v1/users/me", headers=me.headers)
    assert (await r.json())["display_name"] == "New Name"
    # leaving a field out keeps it; null removes the picture
    r = await client.patch("/v1/users/me", json={"display_name": "Newer"}, headers=me.headers)
    assert (await r.json())["avatar_file_id"] == file_id
    r = await client.patch("/v1/users/me", json={"avatar_file_id": None}, headers=me.headers)
    assert (await r.json()) == {"id": me.user_id, "display_name": "Newer",
                                "avatar_file_id": None,
                                "presence": {"online": False, "last_seen_at": None}}
    for body, code in (({"avatar_file_id": "../etc"}, "invalid_avatar_file_id"),
                       ({"display_name": "\x00"}, "invalid_display_name"),
                       ({"email": "x@example.com"}, "validation_error")):
        r = await client.patch("/v1/users/me", json=body, headers=me.headers)
        assert r.status in (400, 422) and (await r.json())["code"] == code, body


async def test_directory_routes_are_in_openapi(sc_client):
    client = await sc_client()
    spec = await (await client.get("/openapi.json")).json()
    assert "get" in spec["paths"]["/v1/users/{user_id}"]
    assert "patch" in spec["paths"]["/v1/users/me"]
    params = {p["name"] for p in spec["paths"]["/v1/users"]["get"]["parameters"]}
    assert {"email", "q", "limit", "cursor"} <= params


async def test_hook_sc_user_contacts(sc_client):
    client = await sc_client({"plugins": switches_without("chat")}, plugins=[kitchen_sink])
    me = await register_and_login(client)
    zed = await register_and_login(client, display_name="Zed")
    client.app[KERNEL].state["sink.contacts"] = {me.user_id: [zed.user_id, me.user_id]}
    r = await client.get("/v1/users", params={"q": "z"}, headers=me.headers)
    assert [u["id"] for u in (await r.json())["users"]] == [zed.user_id]


async def test_hook_sc_user_presence(sc_client):
    client = await sc_client({"plugins": switches_without("chat")}, plugins=[kitchen_sink])
    me, other = await register_and_login(client), await register_and_login(client)
    r = await client.get(f"/v1/users/{other.user_id}", headers=me.headers)
    assert (await r.json())["presence"] is None
    client.app[KERNEL].state["sink.online"] = {other.user_id}
    r = await client.get(f"/v1/users/{other.user_id}", headers=me.headers)
    assert (await r.json())["presence"] == {"online": True, "last_seen_at": None}
