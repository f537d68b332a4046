"""The JSON shapes of a call and its participants (REST answers and event payloads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from secureconnect.models import rfc3339

MEDIA_FIELDS = ("audio", "video", "screen", "hand")


def participant_view(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": p["user_id"],
        "status": p["status"],
        "joined_at": rfc3339(p["joined_at"]),
        "left_at": rfc3339(p["left_at"]),
        "left_reason": p["left_reason"],
        # false while every socket of a joined participant is gone (reconnect grace)
        "connected": p["status"] == "joined" and p["gone_since"] is None,
        **{k: bool(p[k]) for k in MEDIA_FIELDS},
    }


def call_view(call: dict[str, Any], participants: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "conversation_id": call["conversation_id"],
        "conversation_type": call["conversation_type"],
        "type": call["type"],
        "status": call["status"],
        "end_reason": call["end_reason"],
        "initiator_id": call["initiator_id"],
        "created_at": rfc3339(call["created_at"]),
        "ring_expires_at": rfc3339(call["ring_deadline"]),
        "answered_at": rfc3339(call["answered_at"]),
        "ended_at": rfc3339(call["ended_at"]),
        "participants": [participant_view(p) for p in participants if not p["removed"]],
    }
