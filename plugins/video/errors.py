"""The video plugin's problems (stable ``code`` values of docs/video.md)."""

from __future__ import annotations

from secureconnect.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Problem


class CallNotFound(NotFound):
    code = "call_not_found"


class CallInProgress(Conflict):
    """A second initiate while a call is live; the body carries ``call_id``."""

    code = "call_in_progress"


class CallFull(Conflict):
    code = "call_full"


class CallEnded(Conflict):
    code = "call_ended"


class NotCallHost(Forbidden):
    """Ending a group call takes its initiator or a conversation owner/admin."""

    code = "not_call_host"


class NotInCall(Forbidden):
    """A signal from a user who has not joined the call (or the target has not)."""

    code = "not_in_call"


class InvalidSignal(Problem):
    status, code, title = 400, "invalid_signal", "Invalid Signal"


class SignalTooLarge(PayloadTooLarge):
    code = "too_large"
