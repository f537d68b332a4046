"""Chat's problems (RFC 9457 codes clients rely on). ``NotAParticipant`` is the one
published in :mod:`.api`: one answer for "not a member" and "no such conversation"."""

from __future__ import annotations

from secureconnect.errors import Forbidden, NotFound, Problem, Unprocessable

from .api import NotAParticipant

__all__ = [
    "AdminRequired",
    "ChatInvalid",
    "MessageNotFound",
    "MessageRejected",
    "MessageTooLarge",
    "NotAParticipant",
    "NotTheSender",
    "ParticipantNotFound",
]


class AdminRequired(Forbidden):
    code = "admin_required"


class NotTheSender(Forbidden):
    code = "not_the_sender"


class MessageNotFound(NotFound):
    code = "message_not_found"


class ParticipantNotFound(NotFound):
    code = "participant_not_found"


class MessageTooLarge(Problem):
    status, code, title = 413, "message_too_large", "Payload Too Large"


class ChatInvalid(Unprocessable):
    code = "validation_error"


class MessageRejected(Problem):
    status, code, title = 503, "message_rejected", "Message Rejected"
