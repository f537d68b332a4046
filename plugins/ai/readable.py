"""From a window of messages to the lines a provider may read.

Two steps, in this order, and only the first one on the server's side of any boundary:

1. :func:`drop_encrypted` — end-to-end encrypted messages are counted and dropped,
   before anything else looks at them; their content is never copied onward.
2. :func:`readable_lines` — of the rest, the text a person wrote (``text`` and ``poll``
   messages, not blank, not deleted), each cut to ``max_chars``, with an opaque speaker
   label (``reader`` for the asking user, ``P1``, ``P2``, … for the others) instead of
   a user id.

Step 2 is pure and cheap to ship: the local provider runs it in its worker process
(:mod:`.providers.window`), the service on its event loop for the other providers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .providers.base import Line

#: message types whose content is text a person wrote
READABLE_TYPES = frozenset({"text", "poll"})
READER = "reader"

#: a message as step 2 takes it: ``(seq, sender_id, message_type, content)`` — never
#: an encrypted one (chat's ``MessageText`` without its ``is_encrypted`` flag)
Row = tuple[int, str, str, "str | None"]


@dataclass
class Readable:
    """The readable part of a window of messages, and what was left out."""

    lines: list[Line]
    #: deleted, blank or not text (a call, a file)
    other_skipped: int
    #: cut to ``max_chars``
    truncated: int

    def add(self, other: Readable) -> None:
        self.lines += other.lines
        self.other_skipped += other.other_skipped
        self.truncated += other.truncated


def drop_encrypted(messages: Iterable[Sequence[object]]) -> tuple[list[Row], int]:
    """``messages`` (chat's ``MessageText``: seq, sender_id, message_type, content,
    is_encrypted) without the encrypted ones, as :data:`Row`; and how many were
    dropped. The encrypted flag is the only field read of an encrypted message."""
    rows: list[Row] = []
    dropped = 0
    for m in messages:
        if m[4]:
            dropped += 1
        else:
            rows.append(m[:4])  # type: ignore[arg-type]
    return rows, dropped


def readable_lines(rows: Iterable[Row], *, reader_id: str, max_chars: int,
             speakers: dict[str, str] | None = None) -> Readable:
    """The readable lines of ``rows``; ``speakers`` maps sender ids to their labels
    (shared by the parts of one window, so a sender keeps one label)."""
    if speakers is None:
        speakers = {reader_id: READER}
    lines: list[Line] = []
    other = truncated = 0
    for seq, sender_id, message_type, content in rows:
        if content is None or message_type not in READABLE_TYPES:
            other += 1
            continue
        text = content.strip()
        if not text:
            other += 1
            continue
        if len(text) > max_chars:
            text, truncated = text[:max_chars], truncated + 1
        speaker = speakers.setdefault(sender_id, f"P{len(speakers)}")
        lines.append(Line(seq, speaker, text))
    return Readable(lines, other, truncated)
