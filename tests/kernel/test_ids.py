"""Message, user and file ids: UUID v7, unique, and never repeated across a fork."""

from __future__ import annotations

import os
import uuid

from secureconnect.ids import new_id, new_id_str


def test_ids_are_version_7_time_ordered_and_unique() -> None:
    ids = [new_id() for _ in range(5000)]  # several blocks of random bits
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    millis = [int.from_bytes(i.bytes[:6], "big") for i in ids]
    assert millis == sorted(millis)
    texts = [new_id_str() for _ in range(500)]
    assert len(set(texts)) == len(texts)
    for text in texts:  # the canonical form, exactly as uuid prints it
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_reuse_the_parents_random_bits() -> None:
    new_id()  # the parent holds a partly used block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id's random part, exit at once
        os.close(read)
        os.write(write, new_id().bytes[6:])
        os._exit(0)
    os.close(write)
    try:
        child_bits = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert len(child_bits) == 10
    assert child_bits != new_id().bytes[6:]
