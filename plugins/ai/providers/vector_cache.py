"""The local model's memory of message embeddings, in its worker: a conversation
summarised again — by another member, or by the same user a little later — costs the
model only the messages it has not embedded yet.

Keyed by a 128-bit BLAKE2b digest of the text; the text itself is never kept. Bounded
(``ai.local_embedding_cache`` entries, least recently used dropped first, about 1 KB
each with the 256-dimension model) and in memory only: nothing is written anywhere, and
the cache goes with the worker.

A vector from the cache equals the one the model would compute now: the model embeds
each text on its own tokens (average pooling under the attention mask), so a text's
vector does not depend on the other texts of its batch (``tests/plugins/ai/
test_vector_cache.py`` checks bit equality), and summaries stay deterministic.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy comes with the `ai` extra; the server starts without it
    import numpy as np

    Vectors = np.ndarray[Any, Any]


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class VectorCache:
    """Thread-safe (the ``thread`` executor shares one model between its threads); the
    model computes outside the lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._vectors: OrderedDict[bytes, Vectors] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def embed(self, texts: Sequence[str], compute: Callable[[list[str]], Vectors]) -> Vectors:
        """``compute(texts)`` (one row per text), with the rows already known taken from
        the cache; the texts not found are computed in one call and kept."""
        import numpy as np

        if not self.capacity or not texts:
            return compute(list(texts))
        keys = [text_key(text) for text in texts]
        known = self._vectors
        found: dict[int, Vectors] = {}
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                vector = known.get(key)
                if vector is None:
                    missing.append(i)
                else:
                    known.move_to_end(key)
                    found[i] = vector
            self.hits += len(found)
            self.misses += len(missing)
        if not missing:
            return np.stack([found[i] for i in range(len(texts))])
        fresh = compute([texts[i] for i in missing])
        out = np.empty((len(texts), fresh.shape[1]), dtype=fresh.dtype)
        for i, vector in found.items():
            out[i] = vector
        for row, i in enumerate(missing):
            out[i] = fresh[row]
        with self._lock:
            for row, i in enumerate(missing):
                known[keys[i]] = fresh[row].copy()
                known.move_to_end(keys[i])
            while len(known) > self.capacity:
                known.popitem(last=False)
        return out
