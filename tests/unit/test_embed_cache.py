from __future__ import annotations

import numpy as np

from esrank.models.embed_cache import CachedEncoder, EmbeddingCache


class Counting:
    """An encoder whose vectors are a function of the text; it records what it was asked."""

    name, dims, max_tokens = "fake:m", 4, 8

    def __init__(self, key: str = "m:1:fp32"):
        self.key, self.calls = key, []

    def encode(self, texts, batch_size=32):
        self.calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1, 0] for t in texts], dtype=np.float32)

    def token_counts(self, texts):
        return [len(t) for t in texts]


def test_only_texts_never_seen_are_embedded_and_the_file_outlives_the_process(tmp_path):
    inner = Counting()
    cached = CachedEncoder(inner, EmbeddingCache(tmp_path))
    first = cached.encode(["a", "bb", "a"])
    assert inner.calls == [["a", "bb"]]
    assert np.array_equal(first, inner.encode(["a", "bb", "a"]))
    cached.cache.close()
    again = CachedEncoder(inner, EmbeddingCache(tmp_path))  # a later run
    assert np.array_equal(again.encode(["bb", "a", "a"]), first[[1, 0, 2]])
    assert again.cache.hit_rate == 1.0
    again.encode(["ccc", "a"])
    assert inner.calls[-1] == ["ccc"] and again.cache.misses == 1
    assert "cache 75% hits" in again.progress()


def test_another_encoder_key_never_reads_these_vectors(tmp_path):
    cache = EmbeddingCache(tmp_path)
    CachedEncoder(Counting("m:1:fp32"), cache).encode(["a", "b"])
    other = Counting("m:1:int8")
    CachedEncoder(other, cache).encode(["a", "b"])
    assert other.calls == [["a", "b"]]
    summary = cache.summary()
    assert summary["entries"] == {"m:1:fp32": 2, "m:1:int8": 2} and summary["bytes"] > 0
    assert cache.clear() == 4 and cache.summary()["entries"] == {}


def test_no_texts_is_an_empty_array(tmp_path):
    assert CachedEncoder(Counting(), EmbeddingCache(tmp_path)).encode([]).shape == (0, 4)
