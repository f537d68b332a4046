"""PollService at unit level: the real database, a small stand-in for chat's
``chat.conversations`` interface and a recorder in place of the gateway.

The black-box tests (test_polls*.py) cover the same behaviour through HTTP and
WebSocket against the real chat plugin; these pin down the concurrency rules on each
database without the HTTP stack in the way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from secureconnect.errors import Forbidden
from secureconnect.kernel import Kernel
from secureconnect.plugins import build_plugin_manager
from secureconnect.store.sql import Database
from secureconnect.testing import make_settings, wait_for
from secureconnect_plugins.chat.api import CONVERSATIONS
from secureconnect_plugins.polls.domain import PollClosed, PollDraft, PollInvalid, PollSettings
from secureconnect_plugins.polls.models import metadata, polls
from secureconnect_plugins.polls.service import PollService

SETTINGS = PollSettings(
    max_options=10,
    max_question_length=300,
    max_option_length=100,
    default_results_visibility="always",
    max_duration=timedelta(days=365),
    expire_interval=30,
    expire_batch_size=500,
)


@dataclass
class StandInConversations:
    """Membership by dict; what chat's interface promises, nothing more."""

    roles: dict[tuple[str, str], str] = field(default_factory=dict)
    posted: list[dict[str, Any]] = field(default_factory=list)

    async def require_participant(self, conversation_id: str, user_id: str) -> str:
        role = self.roles.get((conversation_id, user_id))
        if role is None:
            raise Forbidden("not a participant", code="not_a_participant")
        return role

    async def post_message(
        self,
        conversation_id: str,
        sender_id: str,
        *,
        content: str,
        message_type: str = "poll",
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message = {
            "id": str(uuid.uuid4()),
            "conversation_id": conversation_id,
            "sender_id": sender_id,
            "content": content,
            "message_type": message_type,
            "metadata": metadata,
        }
        self.posted.append(message)
        return message

    def topic(self, conversation_id: str) -> str:
        return f"conversation:{conversation_id}"


class PublishRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def publish(self, topic: str, event_type: str, data: Any) -> None:
        self.events.append((topic, event_type, data))


@dataclass
class World:
    service: PollService
    kernel: Kernel
    chat: StandInConversations
    ws: PublishRecorder

    def conversation(self, n_members: int) -> tuple[str, list[str]]:
        cid = str(uuid.uuid4())
        people = [str(uuid.uuid4()) for _ in range(n_members + 1)]
        for i, uid in enumerate(people):
            self.chat.roles[(cid, uid)] = "owner" if i == 0 else "member"
        return cid, people


def _async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[World]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/polls.db"
    else:
        try:
            url = _async_url(str(request.getfixturevalue("postgres_url")))
        except pytest.FixtureLookupError:
            pytest.skip("no postgres_url fixture in tests/conftest.py")
    settings = make_settings({"database": {"url": url}}, data_dir=str(tmp_path))
    kernel = Kernel(settings, build_plugin_manager(make_settings()))
    kernel.db = Database(settings.database, kernel.metrics, data_dir=str(tmp_path))
    recorder = PublishRecorder()
    kernel.ws = recorder  # type: ignore[assignment]
    chat = StandInConversations()
    kernel.provide(CONVERSATIONS, chat)
    await kernel.db.start()
    async with kernel.db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield World(PollService(kernel, SETTINGS), kernel, chat, recorder)
    finally:
        await kernel.db.close()


async def test_fifty_concurrent_ballots_are_exact(world: World) -> None:
    svc = world.service
    cid, (owner, *voters) = world.conversation(50)
    poll = await svc.create(owner, cid, PollDraft("Colour?", ["red", "green", "blue"]))
    red, green, blue = (o["id"] for o in poll["options"])
    plan = [red] * 20 + [green] * 20 + [blue] * 10
    await asyncio.gather(*(svc.vote(v, poll["id"], [o]) for v, o in zip(voters, plan, strict=True)))
    got = await svc.get(owner, poll["id"])
    assert [o["votes"] for o in got["options"]] == [20, 20, 10]
    assert got["version"] == 50 and got["voter_count"] == 50

    # one voter racing against itself still ends with exactly one ballot
    hammer = voters[0]
    await asyncio.gather(*(svc.vote(hammer, poll["id"], [o]) for o in [green, blue] * 5))
    got = await svc.get(hammer, poll["id"])
    assert len(got["my_votes"]) == 1 and got["total_votes"] == 50

    updates = [d for _, t, d in world.ws.events if t == "poll.updated"]
    assert len(updates) == 60
    assert sorted(d["version"] for d in updates) == list(range(1, 61))
    assert world.kernel.metrics.value("votes_cast_total", {"poll_type": "single"}) == 60


async def test_close_races_with_votes(world: World) -> None:
    svc = world.service
    cid, (owner, *voters) = world.conversation(20)
    poll = await svc.create(owner, cid, PollDraft("Go?", ["yes", "no"]))
    yes = poll["options"][0]["id"]

    async def attempt(v: str) -> bool:
        try:
            await svc.vote(v, poll["id"], [yes])
            return True
        except PollClosed:
            return False

    results = await asyncio.gather(
        *(attempt(v) for v in voters[:10]),
        svc.close(owner, poll["id"]),
        *(attempt(v) for v in voters[10:]),
    )
    accepted = sum(1 for r in results if r is True)
    got = await svc.get(owner, poll["id"])
    assert got["status"] == "closed" and got["options"][0]["votes"] == accepted
    with pytest.raises(PollClosed):
        await svc.close(owner, poll["id"])


async def test_expiry_is_counted_once_between_job_and_reads(world: World) -> None:
    svc = world.service
    cid, (owner, member) = world.conversation(1)
    closes_at = datetime.now(UTC) + timedelta(milliseconds=300)
    poll = await svc.create(owner, cid, PollDraft("Soon?", ["a", "b"], closes_at=closes_at))
    await wait_for(lambda: datetime.now(UTC) > closes_at, timeout=5)
    closed = await asyncio.gather(
        svc.expire_due(), svc.get(member, poll["id"]), svc.expire_due(), return_exceptions=True
    )
    assert not [c for c in closed if isinstance(c, BaseException)], closed
    # the job closed it, or the read did (a dict): exactly once either way (the metric)
    assert sum(c for c in closed if isinstance(c, int)) in (0, 1)
    assert world.kernel.metrics.value("polls_expired_total") == 1
    assert [t for _, t, d in world.ws.events if t == "poll.closed"] == ["poll.closed"]
    got = await svc.get(member, poll["id"])
    assert got["closed_reason"] == "expired"
    assert got["closed_at"] == got["closes_at"]
    # the gauge is the database's count of open polls (shared with other tests on PG)
    async with world.kernel.db.session() as s:
        still_open = (
            await s.execute(
                select(func.count()).select_from(polls).where(polls.c.closed_at.is_(None))
            )
        ).scalar_one()
    assert world.kernel.metrics.value("polls_active_total") == still_open


async def test_anonymous_views_and_events_carry_no_voter(world: World) -> None:
    svc = world.service
    cid, (owner, *voters) = world.conversation(3)
    poll = await svc.create(owner, cid, PollDraft("Secret?", ["a", "b"], anonymous=True))
    for v in voters:
        await svc.vote(v, poll["id"], [poll["options"][1]["id"]])
    views = [await svc.get(u, poll["id"]) for u in (owner, *voters)]
    views.append(await svc.close(owner, poll["id"]))
    text = repr(views) + repr(world.ws.events)
    assert all(v not in text for v in voters)
    assert views[-1]["options"][1]["votes"] == 3


async def test_outsider_and_validation(world: World) -> None:
    svc = world.service
    cid, (owner, _member) = world.conversation(1)
    outsider = str(uuid.uuid4())
    with pytest.raises(Forbidden):
        await svc.create(outsider, cid, PollDraft("Q?", ["a", "b"]))
    poll = await svc.create(owner, cid, PollDraft("Q?", ["a", "b"]))
    for call in (
        svc.get(outsider, poll["id"]),
        svc.vote(outsider, poll["id"], ["x"]),
        svc.retract(outsider, poll["id"]),
        svc.close(outsider, poll["id"]),
    ):
        with pytest.raises(Forbidden):
            await call
    with pytest.raises(PollInvalid):
        await svc.create(owner, cid, PollDraft("Q?", ["a", "a"]))
    assert world.ws.events[0][0] == f"conversation:{cid}"
    assert world.chat.posted[0]["metadata"] == {"poll_id": poll["id"]}


async def test_a_ballot_on_one_poll_leaves_the_voters_other_polls_alone(world: World) -> None:
    svc = world.service
    cid, (owner, member) = world.conversation(1)
    first = await svc.create(owner, cid, PollDraft("Lunch?", ["pizza", "soup"]))
    second = await svc.create(owner, cid, PollDraft("Dinner?", ["rice", "pasta"]))
    await svc.vote(member, first["id"], [first["options"][0]["id"]])
    await svc.vote(member, second["id"], [second["options"][1]["id"]])
    got_first = await svc.get(member, first["id"])
    assert got_first["my_votes"] == [first["options"][0]["id"]]
    assert [o["votes"] for o in got_first["options"]] == [1, 0]
    got_second = await svc.get(member, second["id"])
    assert got_second["my_votes"] == [second["options"][1]["id"]]
    assert [o["votes"] for o in got_second["options"]] == [0, 1]


async def test_an_option_of_another_poll_is_refused_by_the_database_too(world: World) -> None:
    # validate_ballot refuses it first; the composite foreign key is the second line
    # (a ballot checked against a stale option list): it must answer 422, not 500.
    svc = world.service
    cid, (owner, member) = world.conversation(1)
    first = await svc.create(owner, cid, PollDraft("Lunch?", ["pizza", "soup"]))
    second = await svc.create(owner, cid, PollDraft("Dinner?", ["rice", "pasta"]))
    poll = await svc._authorized_poll(member, first["id"])
    with pytest.raises(PollInvalid) as caught:
        await svc._replace_ballot(poll, member, [second["options"][0]["id"]])
    assert caught.value.code == "unknown_option"
    assert caught.value.detail == "option_ids: unknown option for this poll"
    assert caught.value.extra["errors"] == [
        {"loc": ["option_ids"], "msg": "unknown option for this poll", "type": "unknown_option"}
    ]
    got = await svc.get(member, first["id"])
    assert got["my_votes"] == [] and got["total_votes"] == 0


async def test_a_retraction_is_published_as_poll_updated_and_an_empty_one_is_not(
    world: World,
) -> None:
    svc = world.service
    cid, (owner, member) = world.conversation(1)
    poll = await svc.create(owner, cid, PollDraft("Lunch?", ["pizza", "soup"]))
    await svc.vote(member, poll["id"], [poll["options"][0]["id"]])
    before = len(world.ws.events)
    after = await svc.retract(member, poll["id"])
    assert after["my_votes"] == [] and after["total_votes"] == 0
    (topic, event_type, data), = world.ws.events[before:]
    assert (topic, event_type) == (f"conversation:{cid}", "poll.updated")
    assert data["id"] == poll["id"] and data["total_votes"] == 0 and "my_votes" not in data
    # nothing to retract: no event
    await svc.retract(member, poll["id"])
    assert len(world.ws.events) == before + 1


async def test_a_poll_read_is_one_statement_on_postgres_and_agrees_with_the_reads(
        world: World) -> None:
    """``get`` on PostgreSQL reads the poll, options, tallies, voters and the viewer's
    votes in one statement (one snapshot, one round trip); what it returns is what the
    separate reads in one transaction give, for named and anonymous, multiple-choice
    and untouched polls, for voters and non-voters; an unknown poll is still 404."""
    from secureconnect_plugins.polls.domain import PollNotFound
    from secureconnect_plugins.polls.service import _read_state

    svc, db = world.service, world.kernel.db
    cid, (owner, *voters) = world.conversation(4)
    named = await svc.create(owner, cid, PollDraft("Named?", ["a", "b", "c"],
                                                   allow_multiple=True, max_choices=2))
    anonymous = await svc.create(owner, cid, PollDraft("Secret?", ["x", "y"], anonymous=True))
    untouched = await svc.create(owner, cid, PollDraft("Nobody?", ["p", "q"]))
    a, b, c = (o["id"] for o in named["options"])
    await svc.vote(voters[0], named["id"], [a, c])
    await svc.vote(voters[1], named["id"], [c])
    await svc.vote(voters[2], named["id"], [b, a])
    for v in voters[:3]:
        await svc.vote(v, anonymous["id"], [anonymous["options"][1]["id"]])
    for poll in (named, anonymous, untouched):
        for viewer in (owner, *voters):
            statements = world.kernel.metrics.value("db_query_duration_seconds_count") or 0
            got = await svc.get(viewer, poll["id"])
            if db.is_postgres:
                assert (world.kernel.metrics.value("db_query_duration_seconds_count")
                        == statements + 1)
            state = await db.read(
                lambda fetch, pid=poll["id"], uid=viewer: _read_state(fetch, pid, uid))
            assert got == svc.view(state, viewer_id=viewer)
    got = await svc.get(voters[0], named["id"])
    assert sorted(got["my_votes"]) == sorted([a, c])
    assert [o["votes"] for o in got["options"]] == [2, 1, 2]
    with pytest.raises(PollNotFound):
        await svc.get(owner, str(uuid.uuid4()))
