"""The embedding cache: (encoder key, text) -> vector on disk, so re-indexing an unchanged
catalogue, or the same catalogue under a changed mapping, costs bulk time only.

One SQLite file (ESRANK_HOME/cache/embeddings.sqlite) holds float32 vectors keyed by the
encoder's `key` (model weights + precision) and a 128-bit digest of the text. Encoders that
compute the same vectors share entries; a new model or precision misses and fills its own.

>>> encoder = CachedEncoder(load_encoder(), EmbeddingCache(home / "cache"))  # doctest: +SKIP
>>> encoder.encode(["bluetooth speaker"]); encoder.cache.hit_rate            # doctest: +SKIP
0.0
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esrank.core.batches import batched
from esrank.models.encoder import Encoder

FILE = "embeddings.sqlite"


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Vectors by (encoder key, text); counts the hits and misses of this process."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILE
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # a rowid table: a vector (1.5 kB) fits in its page; the key lives in the index
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, "
                         "text BLOB NOT NULL, vector BLOB NOT NULL, UNIQUE (model, text))")
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, model: str, texts: Sequence[str], dims: int) -> dict[str, np.ndarray]:
        """The cached vectors of those texts that have one."""
        by_digest = {_digest(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for chunk in batched(list(by_digest), 500):
                rows = self._db.execute(
                    f"SELECT text, vector FROM vectors WHERE model = ? AND text IN "
                    f"({','.join('?' * len(chunk))})", [model, *chunk])
                for digest, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (dims,):
                        found[by_digest[digest]] = vector
            self.hits += len(found)
            self.misses += len(by_digest) - len(found)
        return found

    def put(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(model, _digest(t), np.asarray(v, dtype=np.float32).tobytes())
                for t, v in zip(texts, vectors, strict=True)]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0

    @property
    def size_bytes(self) -> int:
        files = [self.path, self.path.with_name(FILE + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())

    def summary(self) -> dict:
        """Entries per encoder key and the bytes on disk."""
        with self._lock:
            rows = self._db.execute("SELECT model, COUNT(*) FROM vectors GROUP BY model")
            models = dict(rows.fetchall())
        return {"path": str(self.path), "entries": models, "bytes": self.size_bytes}

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self._lock:
            count = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            self._db.execute("DELETE FROM vectors")
            self._db.execute("VACUUM")
        return count

    def close(self) -> None:
        self._db.close()


class CachedEncoder:
    """An encoder that takes each distinct text's vector from the cache when it is there and
    embeds only the rest (then stores them)."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache):
        self.inner, self.cache = encoder, cache
        self.name, self.dims, self.max_tokens = encoder.name, encoder.dims, encoder.max_tokens
        self.key = encoder.key

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return self.inner.token_counts(texts)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        found = self.cache.get(self.key, unique, self.dims)
        missing = [t for t in unique if t not in found]
        if missing:
            vectors = self.inner.encode(missing, batch_size)
            self.cache.put(self.key, missing, vectors)
            found.update(zip(missing, vectors, strict=True))
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = found[text]
        return out

    def progress(self) -> str:
        """For progress bars: the encoder and the cache's hit rate and size."""
        return (f"{self.name}, cache {self.cache.hit_rate:.0%} hits, "
                f"{self.cache.size_bytes / 2**20:.0f} MB")
