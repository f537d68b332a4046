"""The push schema: devices, the durable outbox, its dead letters, per-user mutes.

* ``push_devices`` — one row per push token; ``token_hash`` (SHA-256 of platform +
  token) is unique, so a token has exactly one owner: registering it again moves it.
* ``push_pending`` — one row per chat message (or call ring) to notify about, written
  off the send path in batches; a worker claims rows like outbox rows and *expands*
  each into its per-device outbox rows (recipients, mutes, presence, devices looked up
  there) in one transaction that also deletes it.
* ``push_outbox`` — one row per (notification, device). Workers *claim* rows with a
  conditional ``UPDATE`` (``claim_until`` in the past or NULL → a fresh lease with a
  random ``claim_token``), so two instances never send the same row at once; a sent row
  is deleted, a failed one gets ``next_attempt_at`` pushed back.
* ``push_dead_letters`` — rows that ran out of attempts or age, kept for the CLI.
* ``push_mutes`` — ``muted_until`` per (user, conversation).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from secureconnect.models import ID, UtcDateTime, new_metadata

metadata = new_metadata()

devices = Table(
    "push_devices",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    # fcm | apns | webpush | webhook
    Column("platform", String(16), nullable=False),
    # the provider token; webpush: the PushSubscription JSON; webhook: the gateway URL
    Column("token", Text, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("app_id", String(255), nullable=True),
    Column("locale", String(35), nullable=True),
    # the auth session that registered it (logout may remove it)
    Column("session_id", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
Index("ix_push_devices_user", devices.c.user_id)

outbox = Table(
    "push_outbox",
    metadata,
    Column("id", ID, primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("user_id", ID, nullable=False),
    Column("provider", String(16), nullable=False),
    # the notification (docs/push.md "Payloads"), JSON text
    Column("payload", Text, nullable=False),
    Column("collapse_key", String(128), nullable=True),
    # "high" | "normal"
    Column("priority", String(8), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(255), nullable=True),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("claim_token", String(36), nullable=True),
    Column("claim_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)
Index("ix_push_outbox_due", outbox.c.next_attempt_at)
Index("ix_push_outbox_claim", outbox.c.claim_token)
Index("ix_push_outbox_device", outbox.c.device_id)

pending = Table(
    "push_pending",
    metadata,
    Column("id", ID, primary_key=True),
    # "message" | "call"
    Column("kind", String(8), nullable=False),
    # JSON: the message's ids and flags (content only when previews allow it), or the
    # call and its callees
    Column("body", Text, nullable=False),
    Column("claim_token", String(36), nullable=True),
    Column("claim_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)
Index("ix_push_pending_created", pending.c.created_at)
Index("ix_push_pending_claim", pending.c.claim_token)

dead_letters = Table(
    "push_dead_letters",
    metadata,
    Column("id", ID, primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("user_id", ID, nullable=False),
    Column("provider", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("collapse_key", String(128), nullable=True),
    Column("priority", String(8), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("failed_at", UtcDateTime, nullable=False),
)
Index("ix_push_dead_letters_failed", dead_letters.c.failed_at)

mutes = Table(
    "push_mutes",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("conversation_id", ID, primary_key=True),
    Column("muted_until", UtcDateTime, nullable=False),
)
