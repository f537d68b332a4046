"""The local model's embedding cache: a kept vector is the one the model computes now
(summaries stay deterministic), a text embedded once is not embedded again, the cache
stays within its size and keeps no text."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from secureconnect.app import KERNEL
from secureconnect_plugins.ai.providers.embedding import EmbeddingModel
from secureconnect_plugins.ai.providers.vector_cache import VectorCache, text_key

from .helpers import make_room, opt_in, post, seed

TEXTS = [
    "Could you review my merge request before Friday?",
    "the database backup failed again last night",
    "ok",
    "lunch? 🍜",
    "word " * 300,  # a long one: its batch is padded far beyond the short ones
    "we should finish the release notes",
]


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel.load(cache_size=100)


def test_a_kept_vector_equals_the_one_computed_in_any_company(model: EmbeddingModel) -> None:
    for text in TEXTS:
        alone = model._compute([text])[0]
        in_a_batch = model._compute([*TEXTS, text])[-1]
        assert np.array_equal(alone, in_a_batch)  # bit for bit: no batch effect
    first = model._embed(TEXTS)  # computed and kept
    again = model._embed(list(reversed(TEXTS)))[::-1]  # all from the cache
    assert np.array_equal(first, again)
    assert np.array_equal(first, model._compute(TEXTS))


def test_the_offset_free_tokenizer_gives_the_library_s_own_vectors(model: EmbeddingModel
                                                                   ) -> None:
    library = model._model
    ours = model._compute(TEXTS)
    fast = library.tokenize
    del library.tokenize  # wordllama's own method again: encode_batch, with offsets
    try:
        assert library.tokenize.__func__ is type(library).tokenize
        theirs = model._compute(TEXTS)
    finally:
        library.tokenize = fast
    assert np.array_equal(ours, theirs)


def test_texts_embedded_once_are_not_embedded_again(model: EmbeddingModel) -> None:
    cache = VectorCache(100)
    computed, compute = counting(model)
    cache.embed(TEXTS[:4], compute)
    assert computed == TEXTS[:4]
    out = cache.embed(TEXTS, compute)  # four known, two new
    assert computed == TEXTS[:4] + TEXTS[4:]
    assert (cache.hits, cache.misses) == (4, 6)
    assert np.array_equal(out, model._compute(TEXTS))


def test_the_cache_keeps_at_most_its_size_the_most_recently_used(model: EmbeddingModel
                                                                 ) -> None:
    cache = VectorCache(3)
    computed, compute = counting(model)
    cache.embed(TEXTS[:3], compute)
    cache.embed(TEXTS[:1], compute)  # used again: now the most recent
    cache.embed(TEXTS[3:5], compute)  # two more: the two least recent go
    assert len(cache) == 3
    computed.clear()
    cache.embed([TEXTS[0], TEXTS[4], TEXTS[1]], compute)
    assert computed == [TEXTS[1]]
    off = VectorCache(0)
    off.embed(TEXTS, compute)
    assert len(off) == 0


def test_threads_sharing_a_small_cache_get_the_right_vectors(model: EmbeddingModel
                                                             ) -> None:
    # the thread executor: several threads, one model, one cache always evicting
    cache = VectorCache(4)
    expected = model._compute(TEXTS)
    orders = [[(k + j) % len(TEXTS) for j in range(len(TEXTS))] for k in range(len(TEXTS))]

    def work(order: list[int]) -> bool:
        for _ in range(30):
            got = cache.embed([TEXTS[i] for i in order], model._compute)
            if not np.array_equal(got, expected[order]):
                return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, orders))
    assert len(cache) == 4


def counting(model: EmbeddingModel) -> tuple[list[str], Callable[[list[str]], Any]]:
    """The model's own computation, and the texts it was asked for."""
    computed: list[str] = []

    def compute(texts: list[str]) -> Any:
        computed.extend(texts)
        return model._compute(texts)

    return computed, compute


def test_the_cache_keeps_digests_not_text(model: EmbeddingModel) -> None:
    cache = VectorCache(100)
    cache.embed(TEXTS, model._compute)
    keys = list(cache._vectors)
    assert keys == [text_key(t) for t in TEXTS] and all(len(k) == 16 for k in keys)
    for text in TEXTS:
        assert all(text.encode()[:16] not in key for key in keys)


async def test_a_summary_asked_again_is_the_same_with_the_cache_as_without(ai_client
                                                                           ) -> None:
    bodies = []
    for size in (0, 20000):
        client = await ai_client({"ai": {"local_embedding_cache": size}})
        room = await make_room(client, 1)
        bob = room.members[0]
        await seed(room)
        await opt_in(client, bob)
        for _ in range(2):
            r = await post(room, bob, "summary")
            assert r.status == 200
            body = await r.json()
            bodies.append(body["summary"])
        cache = client.server.app[KERNEL].state["ai"].provider._model.cache
        if size:  # the second summary found every message's vector
            assert len(cache) > 0 and cache.hits >= cache.misses > 0
        else:
            assert len(cache) == 0 and cache.hits == 0
    assert bodies[0] and len(set(bodies)) == 1, bodies
