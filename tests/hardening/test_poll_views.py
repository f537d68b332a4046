"""What a poll says, field by field, through its life (issue 22, mutation run): created,
voted on, closed by its creator or expired at its deadline — the answer to the caller
(with ``my_votes``), the shared event (without), and a later read; who may close it and
what a refused close says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from secureconnect import Veto, hookimpl
from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect_plugins.polls.models import polls
from tests.plugins.polls.helpers import SQLITE_FILE, create_poll, make_team, vote

DB = {"database": {"url": SQLITE_FILE}}


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


async def _metric(client: Any, sample: str) -> float:
    body = await (await client.get("/metrics")).text()
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} is not in /metrics")


def _shared(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "my_votes"}


def _mine(view: dict[str, Any]) -> dict[str, Any]:
    """``my_votes`` is a set (the API gives no order)."""
    return {**view, "my_votes": sorted(view["my_votes"])}


async def _get(client: Any, user: Any, poll_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/polls/{poll_id}", headers=user.headers)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def test_a_poll_view_field_by_field_from_creation_to_close(sc_client, sc_ws):
    client = await sc_client(DB)
    team = await make_team(client, 2)
    alice, bob, carol = team.everyone
    ws = await sc_ws(client, carol.access_token)
    closes_at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    poll = await create_poll(team, alice, question="Where to?", options=["north", "south", "east"],
                             allow_multiple=True, max_choices=2, closes_at=_iso(closes_at))
    north, south, east = (o["id"] for o in poll["options"])
    expected = {
        "id": poll["id"], "conversation_id": team.conversation_id, "creator_id": alice.user_id,
        "question": "Where to?",
        "options": [{"id": oid, "text": text, "position": i, "votes": 0, "voters": []}
                    for i, (oid, text) in enumerate(
                        [(north, "north"), (south, "south"), (east, "east")])],
        "allow_multiple": True, "max_choices": 2, "anonymous": False,
        "results_visibility": "always", "results_visible": True, "status": "open",
        "closed_reason": None, "closes_at": _iso(closes_at), "closed_at": None,
        "created_at": poll["created_at"], "message_id": poll["message_id"], "version": 0,
        "voter_count": 0, "total_votes": 0, "my_votes": [],
    }
    assert poll == expected
    assert isinstance(poll["message_id"], str) and poll["created_at"].endswith("Z")
    frame = await ws.expect("poll.created", where=lambda f: f["data"]["id"] == poll["id"])
    assert frame["data"] == _shared(expected)

    after = await vote(client, bob, poll["id"], [north, east])
    expected["options"][0].update(votes=1, voters=[bob.user_id])
    expected["options"][2].update(votes=1, voters=[bob.user_id])
    expected.update(version=1, voter_count=1, total_votes=2, my_votes=[north, east])
    assert _mine(after) == _mine(expected)
    frame = await ws.expect("poll.updated", where=lambda f: f["data"]["version"] == 1)
    assert frame["data"] == _shared({**expected, "my_votes": []})
    assert await _get(client, carol, poll["id"]) == {**expected, "my_votes": []}

    await vote(client, alice, poll["id"], [south])  # the closer's own ballot
    expected["options"][1].update(votes=1, voters=[alice.user_id])
    expected.update(version=2, voter_count=2, total_votes=3)

    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=bob.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        403, "not_poll_owner", "only the poll's creator or a conversation admin may close it")
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    assert r.status == 200, await r.text()
    closed = await r.json()
    assert closed["closed_at"] is not None and closed["closed_at"].endswith("Z")
    expected.update(status="closed", closed_reason="closed", closed_at=closed["closed_at"],
                    version=3, my_votes=[south])
    assert _mine(closed) == _mine(expected)
    frame = await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    assert frame["data"] == _shared(expected)
    assert _mine(await _get(client, bob, poll["id"])) == _mine(
        {**expected, "my_votes": [north, east]})
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        409, "poll_closed", "the poll is already closed")


async def test_hidden_and_anonymous_results_in_every_view(sc_client, sc_ws):
    client = await sc_client(DB)
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, alice.access_token)
    poll = await create_poll(team, alice, results_visibility="after_close", anonymous=True)
    first = poll["options"][0]["id"]
    assert [(o["votes"], o["voters"]) for o in poll["options"]] == [(None, None)] * 3
    assert (poll["results_visible"], poll["total_votes"], poll["anonymous"]) == (
        False, None, True)
    after = await vote(client, bob, poll["id"], [first])
    assert [(o["votes"], o["voters"]) for o in after["options"]] == [(None, None)] * 3
    assert (after["voter_count"], after["total_votes"], after["my_votes"]) == (1, None, [first])
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    closed = await r.json()
    # closed: the counts show, the voters never (anonymous)
    assert [(o["votes"], o["voters"]) for o in closed["options"]] == [
        (1, None), (0, None), (0, None)]
    assert (closed["results_visible"], closed["total_votes"], closed["status"]) == (
        True, 1, "closed")
    frame = await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    assert frame["data"] == _shared(closed)


async def test_an_expired_poll_closes_at_its_deadline_in_every_view(sc_client, sc_ws):
    """The job closes a due poll once: ``closed_at`` is the deadline itself, the reason
    ``expired``; the creator can no longer close it (409, and why)."""
    client = await sc_client({**DB, "polls": {"expire_interval": 3600}})  # explicit runs only
    kernel = client.app[KERNEL]
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, bob.access_token)
    closes_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    poll = await create_poll(team, alice, closes_at=_iso(closes_at))
    other = await create_poll(team, alice, question="Later?")  # no deadline: stays open
    await vote(client, bob, poll["id"], [poll["options"][1]["id"]])
    await wait_for(lambda: datetime.now(UTC) > closes_at, timeout=6, message="closes_at")
    assert await kernel.jobs.run("polls.expire") == 1
    frame = await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    shared = frame["data"]
    assert (shared["status"], shared["closed_reason"], shared["closed_at"], shared["version"]) \
        == ("closed", "expired", _iso(closes_at), 2)
    assert [o["votes"] for o in shared["options"]] == [0, 1, 0]
    assert await _get(client, bob, poll["id"]) == {
        **shared, "my_votes": [poll["options"][1]["id"]]}
    assert (await _get(client, alice, other["id"]))["status"] == "open"
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    body = await r.json()
    assert (r.status, body["code"]) == (409, "poll_closed")


async def test_closing_a_poll_past_its_deadline_expires_it(sc_client, sc_ws):
    """The deadline passed and the job has not run: the creator's close is refused (409,
    and why) and the poll is closed as expired there and then — its members are told."""
    client = await sc_client(DB)
    team = await make_team(client, 1)
    alice, bob = team.everyone
    ws = await sc_ws(client, bob.access_token)
    closes_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    poll = await create_poll(team, alice, closes_at=_iso(closes_at))
    second = await create_poll(team, alice, closes_at=_iso(closes_at), question="Second?")
    await wait_for(lambda: datetime.now(UTC) > closes_at, timeout=6, message="closes_at")
    # a ballot on a poll past its deadline: refused, and why — then it is simply closed
    ballot = {"option_ids": [second["options"][0]["id"]]}
    for detail in ("the poll closed at its deadline (closes_at)", "the poll is closed"):
        r = await client.post(f"/v1/polls/{second['id']}/votes", json=ballot,
                              headers=bob.headers)
        body = await r.json()
        assert (r.status, body["code"], body["detail"]) == (409, "poll_closed", detail)
    r = await client.post(f"/v1/polls/{poll['id']}/close", headers=alice.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        409, "poll_closed", "the poll has already closed (it reached closes_at)")
    frame = await ws.expect("poll.closed", where=lambda f: f["data"]["id"] == poll["id"])
    assert (frame["data"]["closed_reason"], frame["data"]["closed_at"]) == (
        "expired", _iso(closes_at))
    r = await client.delete(f"/v1/polls/{poll['id']}/votes", headers=bob.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (409, "poll_closed", "the poll is closed")
    assert await client.app[KERNEL].jobs.run("polls.expire") == 0  # already closed


async def test_the_expiry_job_closes_due_polls_in_bounded_batches(sc_client):
    """Each run closes at most ``polls.expire_batch_size`` due polls, oldest deadline first;
    a poll closed before its deadline neither counts nor takes a place in the batch."""
    # the periodic run stays out of the way (an hour apart): only the explicit runs count
    client = await sc_client({**DB, "polls": {"expire_batch_size": 2, "expire_interval": 3600}})
    jobs = client.app[KERNEL].jobs
    team = await make_team(client, 0)
    owner = team.owner
    early = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    later = early + timedelta(seconds=1)
    closed_early = await create_poll(team, owner, closes_at=_iso(early), question="Closed?")
    due = [await create_poll(team, owner, closes_at=_iso(later), question=f"Due {i}?")
           for i in range(3)]
    await create_poll(team, owner, question="Open?")  # no deadline: stays open
    r = await client.post(f"/v1/polls/{closed_early['id']}/close", headers=owner.headers)
    assert r.status == 200, await r.text()
    await wait_for(lambda: datetime.now(UTC) > later, timeout=8, message="the deadlines")
    assert [await jobs.run("polls.expire") for _ in range(3)] == [2, 1, 0]
    # each run also resets the gauge from the database: the one poll still open
    assert await _metric(client, "polls_active_total") == 1.0
    for poll in due:
        view = await _get(client, owner, poll["id"])
        assert (view["status"], view["closed_reason"]) == ("closed", "expired")
    view = await _get(client, owner, closed_early["id"])
    assert (view["closed_reason"], view["version"]) == ("closed", 1)


async def test_an_unknown_poll_says_so_on_every_route(sc_client):
    client = await sc_client(DB)
    team = await make_team(client, 0)
    unknown = "00000000-0000-7000-8000-000000000000"
    headers = team.owner.headers
    for r in (await client.get(f"/v1/polls/{unknown}", headers=headers),
              await client.post(f"/v1/polls/{unknown}/votes", json={"option_ids": [unknown]},
                                headers=headers),
              await client.delete(f"/v1/polls/{unknown}/votes", headers=headers),
              await client.post(f"/v1/polls/{unknown}/close", headers=headers)):
        body = await r.json()
        assert (r.status, body["code"], body["detail"]) == (404, "poll_not_found", "no such poll")


class _VetoForbiddenQuestions:
    """A moderation plugin: the timeline message of a poll asking "forbidden…" is vetoed."""

    @hookimpl
    def sc_message_will_be_sent(self, message: dict[str, Any]) -> Veto | None:
        if str(message.get("content", "")).startswith("forbidden"):
            return Veto("that question is not allowed here", code="content_blocked", status=422)
        return None


async def test_a_vetoed_poll_leaves_nothing_and_touches_no_other_poll(sc_client):
    client = await sc_client(DB, plugins=[_VetoForbiddenQuestions()])
    team = await make_team(client, 1)
    kept = await create_poll(team, team.owner, question="Fine?")
    body = await create_poll(team, team.owner, status=422, question="forbidden?")
    assert (body["code"], body["detail"]) == (
        "content_blocked", "that question is not allowed here")
    assert (await _get(client, team.members[0], kept["id"]))["question"] == "Fine?"
    rows = await client.app[KERNEL].db.fetch(select(polls.c.question).order_by(polls.c.question))
    assert [r[0] for r in rows] == ["Fine?"]  # the vetoed poll is gone, the other one kept
