"""Shared building blocks for plugins' SQL tables: one naming convention, one UTC
datetime column type, one clock and one id format for every plugin.

    from secureconnect.models import ID, UtcDateTime, new_metadata, new_id, utcnow

    metadata = new_metadata()
    things = Table("myplugin_things", metadata, Column("id", ID, primary_key=True),
                   Column("created_at", UtcDateTime(), nullable=False))

Timestamps leave the API as RFC 3339 UTC; ids are time-ordered UUIDs (version 7,
:mod:`secureconnect.ids`) stored as 36-character strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from .ids import new_id_str

#: constraint and index names Alembic can reproduce on every backend
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
#: the column type of every id (a UUID's text form)
ID = String(36)


def new_metadata() -> MetaData:
    """A plugin's own ``MetaData`` with the shared naming convention."""
    return MetaData(naming_convention=dict(NAMING_CONVENTION))


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zones: values are stored as naive UTC so that SQL comparisons
    (``closes_at <= :now``) compare like with like; they come back tagged UTC. A naive
    datetime is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        general = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return general
        # SQLite stores the text SQLAlchemy wrote ("2026-12-07 08:30:15.123456"): one
        # C-level parse instead of SQLAlchemy's regular expression plus a second step
        # (a third of a history page's reading); anything else goes the general way
        parse = datetime.fromisoformat

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            if isinstance(value, str) and len(value) >= 19:
                try:
                    found = parse(value)
                except ValueError:
                    pass
                else:
                    if found.tzinfo is None:
                        return found.replace(tzinfo=UTC)
            return general(value) if general is not None else value

        return process


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new time-ordered id (UUID version 7, RFC 9562) as text."""
    return new_id_str()


def rfc3339(value: datetime | None) -> str | None:
    """``2026-11-29T06:00:00.123456Z`` — the API's one timestamp format."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat()[:-6] + "Z"  # (the "+00:00" of an aware UTC value)
