"""WebSocket signaling: ``call.offer``, ``call.answer``, ``call.ice`` and ``call.state``.

Relay rules: the frame's ``data`` is ``{call_id, to_user_id, ...}``; it is relayed only
when both the sender and ``to_user_id`` are joined participants of that live call, to
the target user's sockets on every instance (topic ``user:<id>``). The relayed frame
carries ``from_user_id`` set by the server from the socket's authenticated user; any
``from_user_id`` the client sent is ignored. Refusals are ``error`` frames and nothing
is relayed: ``too_large`` (the frame's data exceeds ``max_signal_bytes``),
``invalid_signal`` (not the shape below), ``call_not_found``, ``not_in_call``.

Shapes: offer/answer ``{sdp: str (an SDP, starting "v=")}``; ice ``{candidate:
{candidate: str, sdpMid?: str|null, sdpMLineIndex?: int|null, usernameFragment?:
str|null} | null}`` (``null`` ends the candidates). ``call.state`` ``{call_id, audio?,
video?, screen?, hand?}`` (booleans) updates the sender's flags and is broadcast to
the joined participants.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from secureconnect.ws.gateway import USER_TOPIC_PREFIX

from .errors import InvalidSignal, NotInCall, SignalTooLarge

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel
    from secureconnect.ws.gateway import Connection, WsHandler

    from .service import CallService

STATE_KEY = "video"


class _Target(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: StrictStr
    to_user_id: StrictStr


class _Sdp(_Target):
    sdp: StrictStr = Field(min_length=3)


class _Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: StrictStr
    sdpMid: StrictStr | None = None
    sdpMLineIndex: StrictInt | None = Field(default=None, ge=0, le=1000)
    usernameFragment: StrictStr | None = None


class _Ice(_Target):
    candidate: _Candidate | None


class _State(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: StrictStr
    audio: StrictBool | None = None
    video: StrictBool | None = None
    screen: StrictBool | None = None
    hand: StrictBool | None = None


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: str, what: str) -> str:
    if _CANONICAL_UUID.fullmatch(value):  # the common case, without building a UUID
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidSignal(f"{what} is not an id") from None


def _size(value: Any, depth: int = 0) -> int:
    """An upper bound of the JSON size of a frame's data, without encoding it."""
    if isinstance(value, str):
        return len(value) * 2 + 2  # escapes at most double a string (\uXXXX aside)
    if depth > 4:
        return len(json.dumps(value))
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + 4 + _size(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(1 + _size(v, depth + 1) for v in value)
    return 8 if value is None or isinstance(value, bool) else len(str(value))


def _parse(model: type[BaseModel], data: dict[str, Any], limit: int) -> Any:
    size = _size(data)
    if size > limit:
        size = len(json.dumps(data, separators=(",", ":")))  # exact before refusing
    if size > limit:
        raise SignalTooLarge(f"the signal is {size} bytes; the limit is {limit}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "data" for e in exc.errors())
        raise InvalidSignal(f"malformed signal ({where})") from None


def _service(kernel: Kernel) -> CallService:
    service: CallService = kernel.state[STATE_KEY].service
    return service


def handlers(kernel: Kernel) -> dict[str, WsHandler]:
    event_types = {kind: f"call.{kind}" for kind in ("offer", "answer", "ice")}
    counters: dict[str, Any] = {}

    async def relay(kind: str, conn: Connection, data: dict[str, Any]) -> Any:
        service = _service(kernel)
        if not counters:
            counters.update({k: service.metrics.relayed.labels(k) for k in event_types})
        model = _Ice if kind == "ice" else _Sdp
        signal = _parse(model, data, service.settings.max_signal_bytes)
        call_id = _uuid(signal.call_id, "call_id")
        target = _uuid(signal.to_user_id, "to_user_id")
        if kind != "ice" and not signal.sdp.lstrip().startswith("v="):
            raise InvalidSignal("sdp is not a session description (it must start with v=)")
        if target == conn.user_id:
            raise InvalidSignal("a signal cannot be addressed to its sender")
        joined = await service.joined_users(call_id, [conn.user_id, target])
        if conn.user_id not in joined:
            raise NotInCall("join the call before signalling in it")
        if target not in joined:
            raise NotInCall("the addressed user has not joined the call")
        out: dict[str, Any] = {"call_id": call_id, "from_user_id": conn.user_id,
                               "to_user_id": target}
        if kind == "ice":
            # validated strictly with no extra keys: the client's object is what it says
            out["candidate"] = data["candidate"]
        else:
            out["sdp"] = signal.sdp
        # posted: the sender's next frame need not wait for other instances to be reached
        # (order is kept; a failure is counted by the gateway)
        await kernel.ws.post(USER_TOPIC_PREFIX + target, event_types[kind], out)
        counters[kind].inc()
        return {"relayed": True}

    async def offer(conn: Connection, data: dict[str, Any]) -> Any:
        return await relay("offer", conn, data)

    async def answer(conn: Connection, data: dict[str, Any]) -> Any:
        return await relay("answer", conn, data)

    async def ice(conn: Connection, data: dict[str, Any]) -> Any:
        return await relay("ice", conn, data)

    async def state(conn: Connection, data: dict[str, Any]) -> Any:
        service = _service(kernel)
        parsed = _parse(_State, data, service.settings.max_signal_bytes)
        call_id = _uuid(parsed.call_id, "call_id")
        changes = {k: v for k, v in parsed.model_dump(exclude={"call_id"}).items()
                   if v is not None}
        await service.joined_users(call_id, [conn.user_id])  # 404 for an unknown call
        return await service.set_media(conn.user_id, call_id, changes)

    return {"call.offer": offer, "call.answer": answer, "call.ice": ice, "call.state": state}
