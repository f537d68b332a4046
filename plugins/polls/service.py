"""Poll logic: create, vote, retract, close, expire. Never sees an HTTP request.

Membership comes from chat's documented interface ``kernel.require("chat.conversations")``
(see docs/chat.md); this module never imports chat internals.

Concurrency: every state change of a poll starts with one conditional ``UPDATE polls
SET version = version + 1 WHERE id = :id AND <open>``. That statement is the atomic
"is it still open?" check *and* it serialises all writers of that poll (row lock on
PostgreSQL, the database write lock on SQLite), so the delete-then-insert of a ballot
that follows can never interleave with another ballot of the same voter or with a
close. Counts are always computed by SQL (``COUNT ... GROUP BY``), never kept in Python.

Privacy: voter identities of anonymous polls are stored (to enforce one ballot per
person and to allow revoting) but never leave this module — views, events and logs
carry counts only. Logs never name voters of any poll.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from secureconnect.errors import Forbidden, Problem
from secureconnect.models import new_id, utcnow
from secureconnect_plugins.chat.api import CONVERSATIONS, MODERATOR_ROLES, Conversations

from .domain import (
    PollClosed,
    PollDraft,
    PollInvalid,
    PollNotFound,
    PollSettings,
    PollState,
    validate_ballot,
    validate_draft,
)
from .metrics import PollMetrics
from .models import poll_options, poll_votes, polls

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)


class PollService:
    def __init__(self, kernel: Kernel, settings: PollSettings) -> None:
        self.kernel = kernel
        self.settings = settings
        self.metrics = PollMetrics.build(kernel.metrics)

    @property
    def conversations(self) -> Conversations:
        # Resolved per call: chat provides it while the app runs (docs/chat.md).
        return self.kernel.require(CONVERSATIONS)

    # -- create ----------------------------------------------------------------------
    async def create(self, user_id: str, conversation_id: str, draft: PollDraft) -> dict[str, Any]:
        conversations = self.conversations
        await conversations.require_participant(conversation_id, user_id)
        row, texts = validate_draft(self.settings, draft)
        poll_id = new_id()
        now = utcnow()
        option_rows = [
            {"id": new_id(), "poll_id": poll_id, "position": i, "text": text}
            for i, text in enumerate(texts)
        ]
        async with self.kernel.db.session() as s:
            await s.execute(
                insert(polls).values(
                    id=poll_id,
                    conversation_id=conversation_id,
                    creator_id=user_id,
                    version=0,
                    created_at=now,
                    **row,
                )
            )
            await s.execute(insert(poll_options), option_rows)
        try:
            # The poll's place in the timeline; chat's guards may veto it.
            message = await conversations.post_message(
                conversation_id,
                user_id,
                content=row["question"],
                message_type="poll",
                metadata={"poll_id": poll_id},
            )
        except BaseException:
            # Nothing half-written survives: no timeline message, no poll.
            async with self.kernel.db.session() as s:
                await s.execute(delete(polls).where(polls.c.id == poll_id))
            raise
        message_id = message.get("id") if isinstance(message, dict) else None
        async with self.kernel.db.session() as s:
            if message_id is not None:
                await s.execute(
                    update(polls).where(polls.c.id == poll_id).values(message_id=str(message_id))
                )
            state = await self._load(s, poll_id, viewer_id=user_id)
        poll_type = "multiple" if row["allow_multiple"] else "single"
        self.metrics.created.labels(poll_type).inc()
        self.metrics.active.inc()
        log.info(
            "poll %s created in conversation %s (%s, anonymous=%s)",
            poll_id,
            conversation_id,
            poll_type,
            row["anonymous"],
        )
        await self._publish(conversation_id, "poll.created", self.view(state, viewer_id=None))
        return self.view(state, viewer_id=user_id)


    # -- read ------------------------------------------------------------------------
    async def get(self, user_id: str, poll_id: str) -> dict[str, Any]:
        # the poll, its options and tallies in one read (one snapshot), then the
        # membership check (404 for an unknown poll, 403 for outsiders, as before)
        db = self.kernel.db

        async def read() -> PollState:
            if db.is_postgres:
                # one statement (one snapshot, one round trip, no transaction)
                return _state_of(await db.fetch(_PG_STATE, {"pid": poll_id, "uid": user_id}),
                                 user_id)
            return await db.read(lambda fetch: _read_state(fetch, poll_id, user_id))

        state = await read()
        await self.conversations.require_participant(state.poll["conversation_id"], user_id)
        if self._is_due(state.poll):
            # The expiry job is late: close now so nobody sees a poll past its deadline.
            await self.expire(poll_id)
            state = await read()
        return self.view(state, viewer_id=user_id)

    # -- vote / retract --------------------------------------------------------------
    async def vote(self, user_id: str, poll_id: str, option_ids: list[str]) -> dict[str, Any]:
        poll = await self._authorized_poll(user_id, poll_id)
        chosen = validate_ballot(poll, option_ids)
        try:
            state = await self._replace_ballot(poll, user_id, chosen)
        except _ClosedOrGone:
            raise await self._why_not_open(poll_id) from None
        self.metrics.votes_cast.labels(_poll_type(poll)).inc()
        log.debug("ballot recorded on poll %s (version %s)", poll_id, state.poll["version"])
        await self._publish(
            poll["conversation_id"], "poll.updated", self.view(state, viewer_id=None)
        )
        return self.view(state, viewer_id=user_id)

    async def _replace_ballot(
        self, poll: dict[str, Any], user_id: str, chosen: list[str]
    ) -> PollState:
        poll_id = poll["id"]
        async with self.kernel.db.session() as s:
            await self._lock_open(s, poll)
            await s.execute(
                delete(poll_votes).where(
                    poll_votes.c.poll_id == poll_id, poll_votes.c.user_id == user_id
                )
            )
            now = utcnow()
            try:
                await s.execute(
                    insert(poll_votes),
                    [
                        {"poll_id": poll_id, "user_id": user_id, "option_id": o, "created_at": now}
                        for o in chosen
                    ],
                )
            except Exception as exc:
                # The composite foreign key rejects an option of another poll.
                if _is_integrity_error(exc):
                    raise PollInvalid(
                        "option_ids", "unknown option for this poll", code="unknown_option"
                    ) from None
                raise
            return await self._load(s, poll_id, viewer_id=user_id)

    async def retract(self, user_id: str, poll_id: str) -> dict[str, Any]:
        poll = await self._authorized_poll(user_id, poll_id)
        try:
            async with self.kernel.db.session() as s:
                await self._lock_open(s, poll)
                result = await s.execute(
                    delete(poll_votes).where(
                        poll_votes.c.poll_id == poll_id, poll_votes.c.user_id == user_id
                    )
                )
                removed = _rowcount(result)
                state = await self._load(s, poll_id, viewer_id=user_id)
        except _ClosedOrGone:
            raise await self._why_not_open(poll_id) from None
        if removed:
            log.debug("ballot retracted on poll %s", poll_id)
            await self._publish(
                poll["conversation_id"], "poll.updated", self.view(state, viewer_id=None)
            )
        return self.view(state, viewer_id=user_id)


    async def _lock_open(self, s: AsyncSession, poll: dict[str, Any]) -> None:
        """Bump the version iff the poll is still open: the atomic open check + lock."""
        now = utcnow()
        result = await s.execute(
            update(polls)
            .where(
                polls.c.id == poll["id"],
                polls.c.closed_at.is_(None),
                or_(polls.c.closes_at.is_(None), polls.c.closes_at > now),
            )
            .values(version=polls.c.version + 1)
        )
        if _rowcount(result) == 1:
            return
        # Closed, expired (job late), or deleted: report it after this transaction ends.
        raise _ClosedOrGone()

    async def _why_not_open(self, poll_id: str) -> Problem:
        """After a failed open check: close a poll the job has not expired yet, then
        say why the change was refused."""
        async with self.kernel.db.session() as s:
            row = (await s.execute(select(polls).where(polls.c.id == poll_id))).first()
        if row is None:
            return PollNotFound("no such poll")
        poll = dict(row._mapping)
        if self._is_due(poll):
            await self.expire(poll_id)
            return PollClosed("the poll closed at its deadline (closes_at)")
        return PollClosed("the poll is closed")

    # -- close / expire --------------------------------------------------------------
    async def close(self, user_id: str, poll_id: str) -> dict[str, Any]:
        poll = await self._authorized_poll(user_id, poll_id)
        if poll["creator_id"] != user_id and poll["role"] not in MODERATOR_ROLES:
            raise Forbidden(
                "only the poll's creator or a conversation admin may close it",
                code="not_poll_owner",
            )
        if self._is_due(poll):
            await self.expire(poll_id)
            raise PollClosed("the poll has already closed (it reached closes_at)")
        now = utcnow()
        async with self.kernel.db.session() as s:
            result = await s.execute(
                update(polls)
                .where(polls.c.id == poll_id, polls.c.closed_at.is_(None))
                .values(
                    closed_at=now,
                    closed_reason="closed",
                    closed_by=user_id,
                    version=polls.c.version + 1,
                )
            )
            if _rowcount(result) == 0:
                raise PollClosed("the poll is already closed")
            state = await self._load(s, poll_id, viewer_id=user_id)
        self.metrics.active.dec()
        log.info("poll %s closed", poll_id)
        await self._publish(
            poll["conversation_id"], "poll.closed", self.view(state, viewer_id=None)
        )
        return self.view(state, viewer_id=user_id)

    async def expire(self, poll_id: str) -> bool:
        """Close one poll whose ``closes_at`` has passed. True when this call closed it
        (the conditional UPDATE makes the job and close-on-read race-free)."""
        now = utcnow()
        async with self.kernel.db.session() as s:
            result = await s.execute(
                update(polls)
                .where(
                    polls.c.id == poll_id,
                    polls.c.closed_at.is_(None),
                    polls.c.closes_at.is_not(None),
                    polls.c.closes_at <= now,
                )
                .values(
                    closed_at=polls.c.closes_at,
                    closed_reason="expired",
                    version=polls.c.version + 1,
                )
            )
            if _rowcount(result) == 0:
                return False
            state = await self._load(s, poll_id, viewer_id=None)
        self.metrics.expired.inc()
        self.metrics.active.dec()
        log.info("poll %s expired", poll_id)
        await self._publish(
            state.poll["conversation_id"], "poll.closed", self.view(state, viewer_id=None)
        )
        return True

    async def expire_due(self) -> int:
        """The periodic job: close every open poll past its deadline (bounded batch)."""
        now = utcnow()
        async with self.kernel.db.session() as s:
            due = (
                (
                    await s.execute(
                        select(polls.c.id)
                        .where(
                            polls.c.closed_at.is_(None),
                            polls.c.closes_at.is_not(None),
                            polls.c.closes_at <= now,
                        )
                        .order_by(polls.c.closes_at)
                        .limit(self.settings.expire_batch_size)
                    )
                )
                .scalars()
                .all()
            )
        closed = 0
        for poll_id in due:
            if await self.expire(str(poll_id)):
                closed += 1
        await self.sync_active_gauge()
        return closed

    async def sync_active_gauge(self) -> None:
        """Reset ``polls_active_total`` from the database (at start-up and per job run),
        so restarts and other instances' closes do not make it drift."""
        async with self.kernel.db.session() as s:
            count = (
                await s.execute(
                    select(func.count()).select_from(polls).where(polls.c.closed_at.is_(None))
                )
            ).scalar_one()
        self.metrics.active.set(int(count))

    # -- helpers ---------------------------------------------------------------------
    async def _authorized_poll(self, user_id: str, poll_id: str) -> dict[str, Any]:
        """The poll row (+ its option ids and the caller's role) after the membership
        check: 404 for an unknown poll, 403 ``not_a_participant`` for outsiders."""
        async with self.kernel.db.session() as s:
            row = (await s.execute(select(polls).where(polls.c.id == poll_id))).first()
            if row is None:
                raise PollNotFound("no such poll")
            poll = dict(row._mapping)
            poll["option_ids"] = [
                str(o)
                for o in (
                    await s.execute(
                        select(poll_options.c.id).where(poll_options.c.poll_id == poll_id)
                    )
                ).scalars()
            ]
        poll["role"] = await self.conversations.require_participant(
            poll["conversation_id"], user_id
        )
        return poll

    @staticmethod
    def _is_due(poll: dict[str, Any]) -> bool:
        closes_at = poll["closes_at"]
        return poll["closed_at"] is None and closes_at is not None and closes_at <= utcnow()

    async def _load(self, s: AsyncSession, poll_id: str, *, viewer_id: str | None) -> PollState:
        def read(session: Any) -> PollState:
            return _read_state(lambda st, params=None: session.execute(st, params).all(),
                               poll_id, viewer_id)

        return await s.run_sync(read)

    def view(self, state: PollState, *, viewer_id: str | None) -> dict[str, Any]:
        """The poll as a client sees it. ``viewer_id=None`` is the shared view sent to
        the conversation topic (no ``my_votes``). Anonymous polls never carry voters."""
        p = state.poll
        visible = p["results_visibility"] == "always" or not state.is_open
        show_voters = visible and not p["anonymous"]
        options = []
        for o in state.options:
            oid = str(o["id"])
            options.append(
                {
                    "id": oid,
                    "text": o["text"],
                    "position": o["position"],
                    "votes": state.counts.get(oid, 0) if visible else None,
                    "voters": list(state.voters.get(oid, [])) if show_voters else None,
                }
            )
        view: dict[str, Any] = {
            "id": str(p["id"]),
            "conversation_id": str(p["conversation_id"]),
            "creator_id": str(p["creator_id"]),
            "question": p["question"],
            "options": options,
            "allow_multiple": bool(p["allow_multiple"]),
            "max_choices": int(p["max_choices"]),
            "anonymous": bool(p["anonymous"]),
            "results_visibility": p["results_visibility"],
            "results_visible": visible,
            "status": "open" if state.is_open else "closed",
            "closed_reason": p["closed_reason"],
            "closes_at": _iso(p["closes_at"]),
            "closed_at": _iso(p["closed_at"]),
            "created_at": _iso(p["created_at"]),
            "message_id": p["message_id"],
            "version": int(p["version"]),
            "voter_count": state.voter_count,
            "total_votes": sum(state.counts.values()) if visible else None,
        }
        if viewer_id is not None:
            view["my_votes"] = list(state.my_votes)
        return view

    async def _publish(self, conversation_id: str, event_type: str, data: dict[str, Any]) -> None:
        """Fan out after commit; a failed publish never fails the change (clients
        catch up with GET /v1/polls/{id})."""
        try:
            topic = self.conversations.topic(conversation_id)
            await self.kernel.ws.publish(topic, event_type, data)
        except Exception:
            self.metrics.publish_failed.inc()
            log.warning(
                "could not publish %s for poll %s", event_type, data.get("id"), exc_info=True
            )


class _ClosedOrGone(Exception):
    """Raised inside a vote transaction to roll it back; translated by the caller."""


# a poll's state, each statement built once (bound per read)
_POLL = select(polls).where(polls.c.id == bindparam("pid"))
_OPTIONS = (select(poll_options.c.id, poll_options.c.position, poll_options.c.text)
            .where(poll_options.c.poll_id == bindparam("pid")).order_by(poll_options.c.position))
_COUNTS = (select(poll_votes.c.option_id, func.count())
           .where(poll_votes.c.poll_id == bindparam("pid")).group_by(poll_votes.c.option_id))
_VOTER_COUNT = select(func.count(func.distinct(poll_votes.c.user_id))).where(
    poll_votes.c.poll_id == bindparam("pid"))
_VOTERS = (select(poll_votes.c.option_id, poll_votes.c.user_id)
           .where(poll_votes.c.poll_id == bindparam("pid"))
           .order_by(poll_votes.c.created_at, poll_votes.c.user_id))
_MY_VOTES = select(poll_votes.c.option_id).where(
    and_(poll_votes.c.poll_id == bindparam("pid"), poll_votes.c.user_id == bindparam("uid")))


def _read_state(fetch: Any, poll_id: str, viewer_id: str | None) -> PollState:
    """The poll's state from ``fetch(statement, params)`` — all in the caller's one
    transaction (an ORM session's, or :meth:`Database.read`'s)."""
    pid = {"pid": poll_id}
    rows = fetch(_POLL, pid)
    if not rows:
        raise PollNotFound("no such poll")
    poll = dict(rows[0]._mapping)
    options = [dict(r._mapping) for r in fetch(_OPTIONS, pid)]
    counts = {str(o): int(n) for o, n in fetch(_COUNTS, pid)}
    voter_count = int(fetch(_VOTER_COUNT, pid)[0][0])
    voters: dict[str, list[str]] = defaultdict(list)
    if not poll["anonymous"]:
        for option_id, voter in fetch(_VOTERS, pid):
            voters[str(option_id)].append(str(voter))
    my_votes: list[str] = []
    if viewer_id is not None:
        my_votes = [str(r[0]) for r in fetch(_MY_VOTES, {"pid": poll_id, "uid": viewer_id})]
    return PollState(poll, options, counts, voter_count, dict(voters), my_votes)


def _pg_state() -> Any:
    """PostgreSQL: what :func:`_read_state` reads, in one statement — the poll's row
    with its options, tallies, voters (unless anonymous) and the viewer's votes as JSON
    columns. One statement sees one snapshot, so it needs no transaction."""
    from sqlalchemy import Boolean, case, literal_column
    from sqlalchemy.dialects.postgresql import aggregate_order_by

    o, v = poll_options.c, poll_votes.c
    pid: Any = bindparam("pid")
    empty: Any = literal_column("'[]'::json")
    options = select(func.coalesce(func.json_agg(aggregate_order_by(
        func.json_build_array(o.id, o.position, o.text), o.position)), empty)
    ).where(o.poll_id == pid).scalar_subquery()
    tallies = (select(v.option_id.label("oid"), func.count().label("n"))
               .where(v.poll_id == pid).group_by(v.option_id).subquery())
    counts = select(func.coalesce(func.json_object_agg(tallies.c.oid, tallies.c.n),
                                  literal_column("'{}'::json"))).scalar_subquery()
    voter_count = select(func.count(func.distinct(v.user_id))).where(
        v.poll_id == pid).scalar_subquery()
    voters = select(func.coalesce(func.json_agg(aggregate_order_by(
        func.json_build_array(v.option_id, v.user_id), v.created_at, v.user_id)), empty)
    ).where(v.poll_id == pid).scalar_subquery()
    mine = select(func.coalesce(func.json_agg(v.option_id), empty)).where(
        v.poll_id == pid, v.user_id == bindparam("uid")).scalar_subquery()
    return select(
        polls,
        options.label("sc_options"),
        counts.label("sc_counts"),
        voter_count.label("sc_voter_count"),
        case((polls.c.anonymous == literal_column("false", Boolean), voters),
             else_=empty).label("sc_voters"),
        mine.label("sc_my_votes"),
    ).where(polls.c.id == pid)


_PG_STATE = _pg_state()
_STATE_COLUMNS = ("sc_options", "sc_counts", "sc_voter_count", "sc_voters", "sc_my_votes")


def _state_of(rows: Any, viewer_id: str | None) -> PollState:
    """The :class:`PollState` of a row of ``_PG_STATE``."""
    if not rows:
        raise PollNotFound("no such poll")
    row = dict(rows[0]._mapping)
    options, counts, voter_count, voter_pairs, mine = (
        _json(row.pop(name)) for name in _STATE_COLUMNS)
    voters: dict[str, list[str]] = defaultdict(list)
    for option_id, voter in voter_pairs:
        voters[str(option_id)].append(str(voter))
    return PollState(
        row,
        [{"id": i, "position": position, "text": text} for i, position, text in options],
        {str(k): int(n) for k, n in counts.items()},
        int(voter_count),
        dict(voters),
        [str(x) for x in mine] if viewer_id is not None else [],
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _poll_type(poll: dict[str, Any]) -> str:
    return "multiple" if poll["allow_multiple"] else "single"


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _is_integrity_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    return isinstance(exc, IntegrityError)
