"""Polls, black-box: REST + WebSocket against the real auth, gateway and chat plugins."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for

from .helpers import counts, create_poll, make_team, users, vote


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


async def metric(client: Any, sample: str) -> float:
    body = await (await client.get("/metrics")).text()
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_create_vote_revote_retract_close(polls_client, sc_ws):
    client = await polls_client()
    team = await make_team(client, 2)
    alice, bob, carol = team.everyone
    ws = await sc_ws(client, carol.access_token)

    poll = await create_poll(team, alice)
    assert poll["status"] == "open" and poll["creator_id"] == alice.user_id
    assert counts(poll) == [0, 0, 0] and poll["my_votes"] == []
    pizza, sushi, salad = (o["id"] for o in poll["options"])
    created = await ws.expect("poll.created", where=lambda f: f["data"]["id"] == poll["id"])
    assert created["data"]["question"] == "Lunch?"

    after = await vote(client, bob, poll["id"], [pizza])
    assert counts(after) == [1, 0, 0] and after["my_votes"] == [pizza]
    assert after["options"][0]["voters"] == [bob.user_id]
    update = await ws.expect("poll.updated", where=lambda f: f["data"]["id"] == poll["id"])
    assert counts(update["data"]) == [1, 0, 0] and "my_votes" not in update["data"]

    # voting again replaces the previous vote
    after = await vote(client, bob, poll["id"], [sushi])
    assert counts(after) == [0, 1, 0] and after["voter_count"] == 1
    await ws.expect("poll.updated", where=lambda f: counts(f["data"]) == [0, 1, 0])

    await vote(client, carol, poll["id"], [sushi])
    # retract removes the caller's vote only
    r = await client.delete(f"/v1/polls/{poll['id']}/votes", headers=bob.headers)
    assert r.status == 200, await r.text()
    after = await r.json()
    assert counts(after) == [0, 1, 0] and after["my_votes"] == []
    assert after["options"][1]["voters"] == [carol.user_id]

    # a plain member who did not create it may not close it
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=bob.headers)
    assert r.status == 403 and (await r.json())["code"] == "not_poll_owner"
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    assert r.status == 200, await r.text()
    closed = await r.json()
    assert closed["status"] == "closed" and closed["closed_reason"] == "closed"
    frame = await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    assert counts(frame["data"]) == [0, 1, 0]

    # closed polls reject votes, retractions and a second close
    r = await client.post(
        f"/v1/polls/{poll['id']}/votes", json={"option_ids": [salad]}, headers=bob.headers
    )
    assert r.status == 409 and (await r.json())["code"] == "poll_closed"
    r = await client.delete(f"/v1/polls/{poll['id']}/votes", headers=carol.headers)
    assert r.status == 409
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    assert r.status == 409
    r = await client.get(f"/v1/polls/{poll['id']}", headers=carol.headers)
    assert r.status == 200 and counts(await r.json()) == [0, 1, 0]


async def test_conversation_admin_may_close_someone_elses_poll(polls_client):
    client = await polls_client()
    team = await make_team(client, 1)
    owner, member = team.everyone
    poll = await create_poll(team, member)
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=owner.headers)
    assert r.status == 200, await r.text()
    assert (await r.json())["closed_reason"] == "closed"


async def test_multiple_choice_and_max_choices(polls_client):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    poll = await create_poll(
        team, alice, allow_multiple=True, max_choices=2, options=["a", "b", "c", "d"]
    )
    a, b, c, _ = (o["id"] for o in poll["options"])
    assert poll["max_choices"] == 2
    after = await vote(client, bob, poll["id"], [a, c])
    assert counts(after) == [1, 0, 1, 0] and sorted(after["my_votes"]) == sorted([a, c])
    after = await vote(client, bob, poll["id"], [b])
    assert counts(after) == [0, 1, 0, 0]
    r = await client.post(
        f"/v1/polls/{poll['id']}/votes", json={"option_ids": [a, b, c]}, headers=bob.headers
    )
    assert r.status == 422 and (await r.json())["code"] == "too_many_choices"
    # default max_choices is every option
    poll = await create_poll(team, alice, allow_multiple=True, options=["x", "y", "z"])
    assert poll["max_choices"] == 3


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"options": ["only one"]}, "options"),
        ({"options": [f"o{i}" for i in range(11)]}, "between 2 and 10"),
        ({"question": "   "}, "question"),
        ({"question": "q" * 301}, "at most 300"),
        ({"options": ["same", "SAME "]}, "distinct"),
        ({"options": ["ok", " "]}, "blank"),
        ({"options": ["ok", "x" * 101]}, "at most 100"),
        ({"max_choices": 2}, "single-choice"),
        ({"allow_multiple": True, "max_choices": 4}, "max_choices"),
        ({"allow_multiple": True, "max_choices": 0}, "max_choices"),
        ({"allow_multiple": "yes"}, "allow_multiple"),
        ({"results_visibility": "sometimes"}, "results_visibility"),
        ({"closes_at": "2001-01-01T00:00:00Z"}, "future"),
        ({"closes_at": "2999-01-01T00:00:00"}, "closes_at"),  # no time zone
        ({"closes_at": "2999-01-01T00:00:00Z"}, "days ahead"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_polls_are_clear_422s(polls_client, fields, fragment):
    client = await polls_client()
    team = await make_team(client, 0)
    body = await create_poll(team, team.owner, status=422, **fields)
    assert body["status"] == 422
    assert body["code"] == "validation_error"
    assert fragment in json.dumps(body), body


async def test_invalid_ballots(polls_client):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    poll = await create_poll(team, alice)
    other = await create_poll(team, alice, question="Other?")
    pizza, sushi = poll["options"][0]["id"], poll["options"][1]["id"]
    for option_ids, code in [
        ([other["options"][0]["id"]], "unknown_option"),
        (["not-an-option"], "unknown_option"),
        ([pizza, sushi], "too_many_choices"),
        ([pizza, pizza], "validation_error"),
        ([], "validation_error"),
    ]:
        r = await client.post(
            f"/v1/polls/{poll['id']}/votes", json={"option_ids": option_ids}, headers=bob.headers
        )
        assert r.status == 422, (option_ids, await r.text())
        assert (await r.json())["code"] == code
    r = await client.post(
        f"/v1/polls/{poll['id']}/votes",
        data="nope",
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    assert r.status == 400
    r = await client.get(f"/v1/polls/{other['id']}", headers=bob.headers)
    assert counts(await r.json()) == [0, 0, 0]


async def test_unknown_poll_is_404(polls_client):
    client = await polls_client()
    (user,) = await users(client, 1)
    for path in ("/v1/polls/00000000-0000-7000-8000-000000000000", "/v1/polls/not-a-uuid"):
        r = await client.get(path, headers=user.headers)
        assert r.status == 404, await r.text()
    r = await client.get("/v1/polls/00000000-0000-7000-8000-000000000000")
    assert r.status == 401


async def test_outsiders_get_403_everywhere_and_no_events(polls_client, sc_ws):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    (mallory,) = await users(client, 1)
    inside = await sc_ws(client, bob.access_token)
    outside = await sc_ws(client, mallory.access_token)

    r = await client.post(
        f"/v1/conversations/{team.conversation_id}/polls",
        json={"question": "Hijack?", "options": ["a", "b"]},
        headers=mallory.headers,
    )
    assert r.status == 403 and (await r.json())["code"] == "not_a_participant"

    poll = await create_poll(team, alice)
    option = poll["options"][0]["id"]
    attempts = [
        client.get(f"/v1/polls/{poll['id']}", headers=mallory.headers),
        client.post(
            f"/v1/polls/{poll['id']}/votes", json={"option_ids": [option]}, headers=mallory.headers
        ),
        client.delete(f"/v1/polls/{poll['id']}/votes", headers=mallory.headers),
        client.post(f"/v1/polls/{poll['id']}/close", headers=mallory.headers),
    ]
    for attempt in attempts:
        r = await attempt
        assert r.status == 403, await r.text()
        body = await r.json()
        assert body["code"] == "not_a_participant"
        assert "Lunch" not in json.dumps(body)

    # an outsider cannot subscribe to the conversation's topic either
    reply = await outside.request("subscribe", {"topic": f"conversation:{team.conversation_id}"})
    assert reply["type"] == "error"

    await vote(client, bob, poll["id"], [option])
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    assert r.status == 200
    # the participant's socket saw every event, so the pipeline flowed ...
    for event in ("poll.created", "poll.updated", "poll.closed"):
        await inside.expect(event, where=lambda f: f["data"]["id"] == poll["id"])
    # ... and the outsider's socket got none of them
    await outside.expect_nothing("poll.created", within=0.3)
    assert not [f for f in outside.seen if str(f.get("type", "")).startswith("poll.")]
    assert poll["id"] not in json.dumps(outside.seen)


async def test_anonymous_poll_never_reveals_voters(polls_client, sc_ws, caplog):
    caplog.set_level(logging.DEBUG)
    client = await polls_client()
    team = await make_team(client, 3)
    creator, *voters = team.everyone
    creator_ws = await sc_ws(client, creator.access_token)
    voter_ws = await sc_ws(client, voters[0].access_token)
    seen_by_api: list[str] = []

    poll = await create_poll(team, creator, anonymous=True)
    yes = poll["options"][0]["id"]
    for v in voters:
        body = await vote(client, v, poll["id"], [yes])
        seen_by_api.append(json.dumps(body))
        assert body["my_votes"] == [yes]  # a voter sees their own choice
    r = await client.delete(f"/v1/polls/{poll['id']}/votes", headers=voters[2].headers)
    seen_by_api.append(await r.text())
    for u in team.everyone:
        r = await client.get(f"/v1/polls/{poll['id']}", headers=u.headers)
        seen_by_api.append(await r.text())
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=creator.headers)
    seen_by_api.append(await r.text())
    final = await r.json()
    assert counts(final) == [2, 0, 0] and final["voter_count"] == 2
    assert all(o["voters"] is None for o in final["options"])

    for ws in (creator_ws, voter_ws):
        await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    # frames about the poll (presence and conversation frames name participants anyway,
    # voters or not, so they say nothing about who voted)
    poll_frames = [
        f
        for f in creator_ws.seen + voter_ws.seen
        if str(f.get("type", "")).startswith("poll.") or poll["id"] in json.dumps(f)
    ]
    assert sum(1 for f in poll_frames if f["type"] == "poll.updated") >= 6
    frames = json.dumps(poll_frames)
    # our own loggers at DEBUG, everything else (drivers echoing SQL parameters) at INFO
    logs = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO or r.name.startswith("secureconnect")
    )
    for v in voters:
        for text in (*seen_by_api, frames, logs):
            assert v.user_id not in text


async def test_results_hidden_until_close(polls_client, sc_ws):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, alice.access_token)
    poll = await create_poll(team, alice, results_visibility="after_close")
    option = poll["options"][0]["id"]
    body = await vote(client, bob, poll["id"], [option])
    assert counts(body) == [None, None, None] and body["total_votes"] is None
    assert body["my_votes"] == [option] and body["voter_count"] == 1
    frame = await ws.expect("poll.updated", where=lambda f: f["data"]["id"] == poll["id"])
    assert counts(frame["data"]) == [None, None, None]
    assert bob.user_id not in json.dumps(frame)
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    closed = await r.json()
    assert counts(closed) == [1, 0, 0] and closed["results_visible"] is True
    assert closed["options"][0]["voters"] == [bob.user_id]


async def test_default_visibility_comes_from_settings(polls_client):
    client = await polls_client({"polls": {"default_results_visibility": "after_close"}})
    team = await make_team(client, 0)
    poll = await create_poll(team, team.owner)
    assert poll["results_visibility"] == "after_close" and counts(poll) == [None] * 3


async def test_poll_appears_in_the_timeline(polls_client, sc_ws):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, bob.access_token)
    poll = await create_poll(team, alice, question="Where to?")
    message = await ws.expect(
        "chat.message", where=lambda f: f["data"].get("message_type") == "poll"
    )
    assert message["data"]["metadata"]["poll_id"] == poll["id"]
    r = await client.get(f"/v1/conversations/{team.conversation_id}/messages", headers=bob.headers)
    assert r.status == 200
    body = await r.json()
    items = body if isinstance(body, list) else body.get("items") or body.get("messages")
    polls_in_timeline = [m for m in items if m["message_type"] == "poll"]
    assert len(polls_in_timeline) == 1
    assert polls_in_timeline[0]["metadata"]["poll_id"] == poll["id"]
    assert poll["message_id"] == str(polls_in_timeline[0]["id"])


async def test_expiry_job_closes_due_polls(polls_client, sc_ws):
    client = await polls_client()
    kernel = client.app[KERNEL]
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, bob.access_token)
    closes_at = datetime.now(UTC) + timedelta(seconds=1)
    poll = await create_poll(team, alice, closes_at=iso(closes_at))
    await vote(client, bob, poll["id"], [poll["options"][2]["id"]])
    assert await metric(client, "polls_active_total") == 1.0
    expired_before = await metric(client, "polls_expired_total")

    assert await kernel.jobs.run("polls.expire") == 0  # not due yet
    await wait_for(lambda: datetime.now(UTC) > closes_at, timeout=5, message="closes_at")
    assert await kernel.jobs.run("polls.expire") == 1
    frame = await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    assert frame["data"]["closed_reason"] == "expired" and counts(frame["data"]) == [0, 0, 1]
    assert await metric(client, "polls_expired_total") == expired_before + 1
    assert await metric(client, "polls_active_total") == 0.0
    assert await kernel.jobs.run("polls.expire") == 0  # closes once
    r = await client.post(
        f"/v1/polls/{poll['id']}/votes",
        json={"option_ids": [poll["options"][0]["id"]]},
        headers=bob.headers,
    )
    assert r.status == 409 and (await r.json())["code"] == "poll_closed"


async def test_late_job_poll_closes_on_read_and_on_vote(polls_client, sc_ws):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, bob.access_token)
    closes_at = datetime.now(UTC) + timedelta(seconds=1)
    read_poll = await create_poll(team, alice, closes_at=iso(closes_at))
    vote_poll = await create_poll(team, alice, closes_at=iso(closes_at), question="Vote?")
    await wait_for(lambda: datetime.now(UTC) > closes_at, timeout=5, message="closes_at")

    r = await client.get(f"/v1/polls/{read_poll['id']}", headers=bob.headers)
    body = await r.json()
    assert body["status"] == "closed" and body["closed_reason"] == "expired"
    await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == read_poll["id"])

    r = await client.post(
        f"/v1/polls/{vote_poll['id']}/votes",
        json={"option_ids": [vote_poll["options"][0]["id"]]},
        headers=bob.headers,
    )
    assert r.status == 409 and (await r.json())["code"] == "poll_closed"
    await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == vote_poll["id"])
    assert await metric(client, "polls_expired_total") == 2.0
    assert await client.app[KERNEL].jobs.run("polls.expire") == 0


async def test_metrics(polls_client):
    client = await polls_client()
    team = await make_team(client, 1)
    alice, bob = team.everyone
    single = await create_poll(team, alice)
    multiple = await create_poll(team, alice, allow_multiple=True)
    await vote(client, bob, single["id"], [single["options"][0]["id"]])
    await vote(client, bob, single["id"], [single["options"][1]["id"]])
    await vote(client, alice, multiple["id"], [o["id"] for o in multiple["options"]])
    assert await metric(client, 'polls_created_total{type="single"}') == 1.0
    assert await metric(client, 'polls_created_total{type="multiple"}') == 1.0
    assert await metric(client, 'votes_cast_total{poll_type="single"}') == 2.0
    assert await metric(client, 'votes_cast_total{poll_type="multiple"}') == 1.0
    assert await metric(client, "polls_active_total") == 2.0
    await client.post(f"/v1/polls/{single['id']}/close", headers=alice.headers)
    assert await metric(client, "polls_active_total") == 1.0


async def test_openapi_documents_the_poll_routes(polls_client):
    client = await polls_client()
    spec = await (await client.get("/openapi.json")).json()
    for path in (
        "/v1/conversations/{conversation_id}/polls",
        "/v1/polls/{poll_id}",
        "/v1/polls/{poll_id}/votes",
        "/v1/polls/{poll_id}/close",
    ):
        assert path in spec["paths"], path
