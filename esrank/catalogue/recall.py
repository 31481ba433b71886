"""The recall stage: each query's candidates, the BM25 top N joined with the K nearest products
by embedding (kNN over the catalogue's HNSW graph), fetched in one msearch per batch of queries.

A model rescores the whole candidate set; the fused baselines (esrank.ranking.fusion) read the
same two lists. `Recall` names a candidate set; a table records the one it was logged over and
a model the one it was trained for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from esrank.catalogue.index import ID_FIELD, VECTOR_FIELD
from esrank.catalogue.query import DEFAULT_FIELDS, bm25_query
from esrank.core.errors import InputError
from esrank.engine import Engine

MAX_CANDIDATES = 10_000  # the most hits either list may take (the engines' result window)


@dataclass(frozen=True)
class Recall:
    """A candidate set: the BM25 top `bm25` joined with the `knn` nearest products (0: BM25
    alone)."""

    bm25: int = 100
    knn: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.bm25 <= MAX_CANDIDATES and 0 <= self.knn <= MAX_CANDIDATES
                and self.bm25 + self.knn > 0):
            raise InputError(f"a candidate set takes 0..{MAX_CANDIDATES} BM25 hits and "
                             f"0..{MAX_CANDIDATES} nearest products, not none at all; got "
                             f"{self.bm25} and {self.knn}")

    @property
    def label(self) -> str:
        """E.g. "bm25@100+knn@50", "knn@100"."""
        return "+".join(f"{name}@{n}" for name, n in (("bm25", self.bm25), ("knn", self.knn))
                        if n)

    def to_dict(self) -> dict:
        return {"bm25": self.bm25, "knn": self.knn}

    @classmethod
    def from_dict(cls, d: dict) -> Recall:
        return cls(int(d["bm25"]), int(d.get("knn", 0)))


@dataclass(frozen=True)
class Candidates:
    """One query's two lists, each (doc id, engine score) in rank order; the kNN score is
    (1 + cos) / 2 on both engines."""

    bm25: tuple[tuple[str, float], ...]
    knn: tuple[tuple[str, float], ...] = ()

    @property
    def ids(self) -> list[str]:
        """The candidate set: BM25's docs in its order, then the nearest ones it lacks in kNN
        order (a doc's place here is its first-pass rank)."""
        return list(dict.fromkeys([d for d, _ in self.bm25] + [d for d, _ in self.knn]))

    def ranks(self) -> dict[str, tuple[int, int]]:
        """Doc id -> (its BM25 rank, its kNN rank), 0 where a list lacks it."""
        bm25 = {d: r for r, (d, _) in enumerate(self.bm25, 1)}
        knn = {d: r for r, (d, _) in enumerate(self.knn, 1)}
        return {d: (bm25.get(d, 0), knn.get(d, 0)) for d in self.ids}


def recall_bodies(engine: Engine, texts: Sequence[str], recall: Recall,
                  vectors: Sequence[Sequence[float]] | None = None,
                  fields: Sequence[str] = DEFAULT_FIELDS) -> list[dict]:
    """The msearch bodies of the recall stage: per query its BM25 search, then (with
    `recall.knn`) its kNN search, ids only (read from doc values)."""
    bodies = []
    ids_only = {"_source": False, "stored_fields": "_none_", "docvalue_fields": [ID_FIELD]}
    for i, text in enumerate(texts):
        if recall.bm25:
            bodies.append({"size": recall.bm25, "query": bm25_query(text, fields), **ids_only})
        if recall.knn:
            vector = [float(x) for x in vectors[i]]
            bodies.append({"size": recall.knn, **ids_only, "query": engine.dialect.knn_query(
                VECTOR_FIELD, vector, recall.knn)})
    return bodies


def retrieve(engine: Engine, index: str, texts: Sequence[str], recall: Recall,
             vectors: Sequence[Sequence[float]] | None = None,
             fields: Sequence[str] = DEFAULT_FIELDS) -> list[Candidates]:
    """Each query's candidates (one msearch); `vectors`, the queries' embeddings, are needed
    when `recall.knn` > 0.

    >>> retrieve(engine, "products", ["usb cable"], Recall(100, 50),
    ...          enc.encode(["usb cable"]))[0].ids[:3]  # doctest: +SKIP
    """
    if recall.knn and (vectors is None or len(vectors) != len(texts)):
        raise InputError("a kNN candidate list needs one query vector per query")
    if not texts:
        return []
    responses = iter(engine.msearch(index, recall_bodies(engine, texts, recall, vectors,
                                                         fields)))
    return [Candidates(_listed(next(responses)) if recall.bm25 else (),
                       _listed(next(responses)) if recall.knn else ()) for _ in texts]


def _listed(response: dict) -> tuple[tuple[str, float], ...]:
    return tuple((h["fields"][ID_FIELD][0], float(h["_score"]))
                 for h in response["hits"]["hits"])
