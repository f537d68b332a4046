"""Frame encoding: the only code that knows the gateway's wire layout.

Owns
    The envelope ``{"type", "id"?, "data"}`` (``type`` always the first key), the
    ``ack`` / ``error`` / ``resync`` frames, reading a client's envelope, the
    WebSocket text frame header (RFC 6455 §5.2), the Server-Sent Events lines and the
    close codes. The client contract is ``/work/shared/API.md`` "WebSocket".

Guarantees
    * Every encoded frame starts with ``{"type":"`` — :func:`event_type_of` reads the
      type back without parsing JSON (metrics, SSE ``event:`` lines rely on it).
    * Frames are compact JSON text; values JSON cannot carry are sent as ``str()``.
    * :func:`decode` returns a well-formed envelope or raises :class:`BadFrame` with a
      stable error code; it never raises anything else.

Called by
    ``connection`` (resync notices, WebSocket framing), ``topics`` (an event is encoded
    once per publish and framed once per fan-out), ``dispatch`` (acks, errors,
    envelopes), ``serving`` (SSE lines), plugins through ``Connection.send``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013

#: how every frame begins; the type's text follows at once
TYPE_PREFIX = '{"type":"'
_TYPE_AT = len(TYPE_PREFIX)

_FRAME_HEADER_SHORT = struct.Struct("!BB")
_FRAME_HEADER_MEDIUM = struct.Struct("!BBH")
_FRAME_HEADER_LONG = struct.Struct("!BBQ")


def encode(event_type: str, data: Any, frame_id: Any = None) -> str:
    """The frame for an event: ``{"type", "id"?, "data"}``, in that key order."""
    frame: dict[str, Any] = {"type": event_type}
    if frame_id is not None:
        frame["id"] = frame_id
    frame["data"] = data
    return json.dumps(frame, separators=(",", ":"), default=str)


def ack_frame(result: Any, frame_id: Any) -> str:
    """The answer to a client frame whose handler succeeded."""
    return encode("ack", result, frame_id)


def error_frame(code: str, message: str, frame_id: Any = None) -> str:
    """The answer to a client frame that failed (``frame_id`` ``None``: unknown)."""
    return encode("error", {"code": code, "message": message}, frame_id)


def resync_frame(reason: str, dropped: int) -> str:
    """Tells a client that events were dropped for it; it re-reads history."""
    return encode("resync", {"reason": reason, "dropped": dropped})


def event_type_of(frame: str) -> str | None:
    """The ``type`` of an encoded frame, read from its first key (``None``: no type)."""
    if not frame.startswith(TYPE_PREFIX):
        return None
    end = frame.find('"', _TYPE_AT)
    return frame[_TYPE_AT:end] if end > 0 else None


def text_frame(payload: bytes) -> bytes:
    """A whole, final, unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2) —
    what a server sends; built once per event and written to every socket as is."""
    size = len(payload)
    if size < 126:
        return _FRAME_HEADER_SHORT.pack(0x81, size) + payload
    if size < 65536:
        return _FRAME_HEADER_MEDIUM.pack(0x81, 126, size) + payload
    return _FRAME_HEADER_LONG.pack(0x81, 127, size) + payload


class BadFrame(Exception):
    """A client frame that is not an envelope: answered with ``error`` ``code``."""

    def __init__(self, code: str, message: str, frame_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


def decode(raw: str) -> tuple[Any, str, dict[str, Any]]:
    """``(id, type, data)`` of a client's text frame (``data`` defaults to ``{}``)."""
    try:
        frame = json.loads(raw)
    except ValueError:
        raise BadFrame("bad_json", "the frame is not JSON") from None
    if not isinstance(frame, dict):
        raise BadFrame("bad_envelope", "a frame is an object {type, id, data}")
    frame_id = frame.get("id")
    event_type = frame.get("type")
    data = frame.get("data", {})
    if data is None:
        data = {}
    if (
        not isinstance(event_type, str)
        or not isinstance(data, dict)
        or (frame_id is not None and not isinstance(frame_id, str | int))
    ):
        raise BadFrame(
            "bad_envelope", "a frame is {type: string, id?: string, data?: object}", frame_id
        )
    return frame_id, event_type, data


# -- Server-Sent Events (the same frames, one per event) ------------------------------
SSE_CONNECTED = b": connected\n\n"
SSE_KEEPALIVE = b": keepalive\n\n"


def sse_event(frame: str) -> bytes:
    """An encoded frame as one Server-Sent Event named after its type."""
    return f"event: {event_type_of(frame) or 'message'}\ndata: {frame}\n\n".encode()
