"""Polls' vocabulary: settings, a poll as drafted, a poll as read, the problems, and
the validation rules of drafts and ballots (pure functions; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from secureconnect.errors import Conflict, NotFound, Problem
from secureconnect.models import utcnow

Visibility = Literal["always", "after_close"]


class PollInvalid(Problem):
    """A semantically invalid poll or ballot (422), in the kernel's validation format."""

    status, code, title = 422, "validation_error", "Validation Error"

    def __init__(self, field: str, message: str, *, code: str = "validation_error") -> None:
        super().__init__(
            f"{field}: {message}",
            code=code,
            errors=[{"loc": [field], "msg": message, "type": code}],
        )


class PollClosed(Conflict):
    code = "poll_closed"


class PollNotFound(NotFound):
    code = "poll_not_found"


@dataclass(frozen=True)
class PollSettings:
    max_options: int
    max_question_length: int
    max_option_length: int
    default_results_visibility: Visibility
    max_duration: timedelta
    expire_interval: float
    expire_batch_size: int

    @classmethod
    def from_settings(cls, table: Any) -> PollSettings:
        return cls(
            max_options=int(table.max_options),
            max_question_length=int(table.max_question_length),
            max_option_length=int(table.max_option_length),
            default_results_visibility=table.default_results_visibility,
            max_duration=timedelta(days=float(table.max_duration_days)),
            expire_interval=float(table.expire_interval),
            expire_batch_size=int(table.expire_batch_size),
        )


@dataclass(frozen=True)
class PollDraft:
    """A new poll as the client asked for it (shape already checked by pydantic)."""

    question: str
    options: list[str]
    allow_multiple: bool = False
    max_choices: int | None = None
    anonymous: bool = False
    results_visibility: Visibility | None = None
    closes_at: datetime | None = None


@dataclass
class PollState:
    """One poll with its options and SQL-computed tallies, read in one transaction."""

    poll: dict[str, Any]
    options: list[dict[str, Any]]
    counts: dict[str, int]
    voter_count: int
    voters: dict[str, list[str]]
    my_votes: list[str]

    @property
    def is_open(self) -> bool:
        return self.poll["closed_at"] is None


def validate_draft(s: PollSettings, draft: PollDraft) -> tuple[dict[str, Any], list[str]]:
    question = draft.question.strip()
    if not question:
        raise PollInvalid("question", "must not be blank")
    if len(question) > s.max_question_length:
        raise PollInvalid(
            "question",
            f"must be at most {s.max_question_length} characters, got {len(question)}",
        )
    texts = [t.strip() for t in draft.options]
    if not 2 <= len(texts) <= s.max_options:
        raise PollInvalid(
            "options", f"must have between 2 and {s.max_options} options, got {len(texts)}"
        )
    for i, text in enumerate(texts):
        if not text:
            raise PollInvalid("options", f"option {i + 1} must not be blank")
        if len(text) > s.max_option_length:
            raise PollInvalid(
                "options",
                f"option {i + 1} must be at most {s.max_option_length} "
                f"characters, got {len(text)}",
            )
    if len({t.casefold() for t in texts}) != len(texts):
        raise PollInvalid("options", "options must be distinct")
    if draft.allow_multiple:
        max_choices = draft.max_choices if draft.max_choices is not None else len(texts)
        if not 1 <= max_choices <= len(texts):
            raise PollInvalid(
                "max_choices",
                f"must be between 1 and the number of options "
                f"({len(texts)}), got {max_choices}",
            )
    else:
        if draft.max_choices not in (None, 1):
            raise PollInvalid(
                "max_choices",
                "a single-choice poll allows exactly 1 choice; "
                "set allow_multiple to true for more",
            )
        max_choices = 1
    closes_at = draft.closes_at
    if closes_at is not None:
        now = utcnow()
        if closes_at <= now:
            raise PollInvalid("closes_at", "must be in the future")
        if closes_at - now > s.max_duration:
            raise PollInvalid("closes_at", f"must be at most {s.max_duration.days} days ahead")
    row = {
        "question": question,
        "allow_multiple": draft.allow_multiple,
        "max_choices": max_choices,
        "anonymous": draft.anonymous,
        "results_visibility": draft.results_visibility or s.default_results_visibility,
        "closes_at": closes_at,
    }
    return row, texts


def validate_ballot(poll: dict[str, Any], option_ids: list[str]) -> list[str]:
    chosen = [str(o) for o in option_ids]
    if not chosen:
        raise PollInvalid(
            "option_ids",
            "choose at least one option; DELETE /v1/polls/{id}/votes retracts a vote",
        )
    if len(set(chosen)) != len(chosen):
        raise PollInvalid("option_ids", "an option may be chosen only once")
    limit = int(poll["max_choices"])
    if len(chosen) > limit:
        raise PollInvalid(
            "option_ids",
            f"this poll allows at most {limit} choice"
            f"{'s' if limit != 1 else ''}, got {len(chosen)}",
            code="too_many_choices",
        )
    valid = set(poll["option_ids"])
    if not set(chosen) <= valid:
        raise PollInvalid("option_ids", "unknown option for this poll", code="unknown_option")
    return chosen
