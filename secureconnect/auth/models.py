"""The auth schema: users, sessions, refresh tokens and single-use email tokens.

Ids are time-ordered UUIDs kept as their 36-character text form (portable across
SQLite, PostgreSQL and CockroachDB; other plugins reference ``users.id`` the same way).
Secrets never sit in the database in the clear: refresh tokens and email tokens are
stored as SHA-256 digests, passwords as argon2id hashes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from secureconnect.models import ID, UtcDateTime, new_metadata

from ..migrations import MigrationSource

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = new_metadata()



#: hex SHA-256 digest of a token
DIGEST = String(64)

ROLES = ("user", "admin")
EMAIL_TOKEN_PURPOSES = ("verify_email", "password_reset")

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    # normalised (lower case, IDNA domain) by the service before it gets here
    Column("email", String(254), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False, default="user"),
    Column("email_verified_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("password_changed_at", UtcDateTime, nullable=True),
    # set while an administrator has disabled the account: no sign-in, no session
    Column("disabled_at", UtcDateTime, nullable=True),
    CheckConstraint("role IN ('user', 'admin')", name="role"),
)

sessions = Table(
    "auth_sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # absolute end of the session: refresh tokens stop working then
    Column("expires_at", UtcDateTime, nullable=False),
    Column("last_refreshed_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    # logout | refresh_token_reuse | password_reset | admin
    Column("revoked_reason", String(32), nullable=True),
)
Index("ix_auth_sessions_user", sessions.c.user_id, sessions.c.revoked_at)
Index("ix_auth_sessions_expires", sessions.c.expires_at)

refresh_tokens = Table(
    "auth_refresh_tokens",
    metadata,
    Column("token_hash", DIGEST, primary_key=True),
    Column("session_id", ID, ForeignKey("auth_sessions.id", ondelete="CASCADE"), nullable=False),
    # 1 for the login's token, +1 per rotation
    Column("generation", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # set when the token was exchanged; presenting it again is reuse
    Column("rotated_at", UtcDateTime, nullable=True),
)
Index("ix_auth_refresh_tokens_session", refresh_tokens.c.session_id)

email_tokens = Table(
    "auth_email_tokens",
    metadata,
    Column("token_hash", DIGEST, primary_key=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    CheckConstraint("purpose IN ('verify_email', 'password_reset')", name="purpose"),
)
Index("ix_auth_email_tokens_expires", email_tokens.c.expires_at)
Index("ix_auth_email_tokens_user", email_tokens.c.user_id, email_tokens.c.purpose)


def migration_source() -> MigrationSource:
    return MigrationSource("auth", metadata, MIGRATIONS)
