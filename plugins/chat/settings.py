"""Chat's settings, read once from ``[chat]`` (validated in ``sc_settings_validators``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChatSettings:
    max_group_members: int
    max_content_bytes: dict[str, int]
    max_metadata_bytes: int
    history_default_limit: int
    history_max_limit: int
    conversations_max_limit: int
    typing_ttl: float
    typing_throttle: float
    last_seen_ttl: float
    presence_ttl: float
    max_pending_notifications: int
    membership_cache_ttl: float = 0.0
    membership_cache_size: int = 100_000
    activity_flush_interval: float = 0.0

    @classmethod
    def from_settings(cls, t: Any) -> ChatSettings:
        return cls(
            max_group_members=int(t.max_group_members),
            max_content_bytes={str(k): int(v) for k, v in dict(t.max_content_bytes).items()},
            max_metadata_bytes=int(t.max_metadata_bytes),
            history_default_limit=int(t.history_default_limit),
            history_max_limit=int(t.history_max_limit),
            conversations_max_limit=int(t.conversations_max_limit),
            typing_ttl=float(t.typing_ttl),
            typing_throttle=float(t.typing_throttle),
            last_seen_ttl=float(t.last_seen_ttl),
            presence_ttl=float(t.presence_ttl),
            max_pending_notifications=int(t.max_pending_notifications),
            membership_cache_ttl=float(t.membership_cache_ttl),
            membership_cache_size=int(t.membership_cache_size),
            activity_flush_interval=float(t.activity_flush_interval),
        )
