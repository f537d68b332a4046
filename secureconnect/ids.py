"""Time-ordered identifiers (UUID version 7, RFC 9562).

A v7 UUID starts with a 48-bit Unix timestamp in milliseconds, so ids sort by creation
time (good B-tree locality, stable pagination) while 74 random bits keep them
unguessable. Within one millisecond ids are random, not monotonic; nothing here
relies on strict order inside a millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

# Random bits come from os.urandom in blocks: one getrandom() call per ~400 ids instead
# of one each (the call releases the GIL, which costs a thread switch under load).
_BLOCK = 4096
_lock = threading.Lock()
_block = b""
_offset = 0


def _reset_after_fork() -> None:
    global _block, _offset
    _block, _offset = b"", 0  # a child must never reuse its parent's bits


os.register_at_fork(after_in_child=_reset_after_fork)


def _random_bytes(n: int) -> bytes:
    global _block, _offset
    with _lock:
        if _offset + n > len(_block):
            _block, _offset = os.urandom(_BLOCK), 0
        chunk = _block[_offset:_offset + n]
        _offset += n
    return chunk


def _new_raw() -> bytes:
    millis = time.time_ns() // 1_000_000
    raw = bytearray(millis.to_bytes(6, "big") + _random_bytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return bytes(raw)


def new_id() -> uuid.UUID:
    """A fresh time-ordered UUID (version 7)."""
    return uuid.UUID(bytes=_new_raw())


def new_id_str() -> str:
    """:func:`new_id` in its canonical text form (36 lower-case characters).

    Formatted straight from the bytes: one per message on the send path, where building
    a ``uuid.UUID`` only to print it costs more than the rest of the id.
    """
    h = _new_raw().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
