"""The recall stage's records and requests, and the fused baselines, worked by hand."""

from __future__ import annotations

import pytest

from esrank.catalogue.recall import Candidates, Recall, recall_bodies
from esrank.core.errors import InputError
from esrank.engine import Engine
from esrank.ranking.fusion import RRF_K, fuse

C = Candidates(bm25=(("a", 12.0), ("b", 8.0), ("c", 2.0)),
               knn=(("d", 0.9), ("b", 0.8), ("e", 0.5)))


def test_a_candidate_set_is_named_and_checked():
    assert Recall(100, 50).label == "bm25@100+knn@50"
    assert Recall(100).label == "bm25@100" and Recall(0, 20).label == "knn@20"
    assert Recall.from_dict(Recall(30, 7).to_dict()) == Recall(30, 7)
    assert Recall.from_dict({"bm25": 100}) == Recall(100, 0)
    for bad in ((0, 0), (-1, 5), (100, 10_001)):
        with pytest.raises(InputError, match="candidate set"):
            Recall(*bad)


def test_the_union_keeps_bm25_order_then_the_nearest_it_lacks():
    assert C.ids == ["a", "b", "c", "d", "e"]
    assert C.ranks() == {"a": (1, 0), "b": (2, 2), "c": (3, 0), "d": (0, 1), "e": (0, 3)}


def test_rrf_sums_reciprocal_ranks():
    fused = dict(fuse("rrf", C))
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) * 2)
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert [d for d, _ in fuse("rrf", C)][:3] == ["b", "a", "d"]


def test_linear_mixes_min_max_scores_with_the_bm25_weight():
    # BM25 min-max: a 1, b 0.6, c 0; kNN: d 1, b 0.75, e 0
    fused = dict(fuse("linear", C, weight=0.25))
    assert fused["a"] == pytest.approx(0.25)
    assert fused["b"] == pytest.approx(0.25 * 0.6 + 0.75 * 0.75)
    assert fused["d"] == pytest.approx(0.75)
    assert [d for d, _ in fuse("linear", C, weight=1.0)] == ["a", "b", "c", "d", "e"]
    assert [d for d, _ in fuse("linear", C, weight=0.0)][:2] == ["d", "b"]


def test_knn_alone_is_the_knn_list_and_ties_keep_the_union_order():
    assert fuse("knn", C) == list(C.knn)
    flat = Candidates((("x", 1.0), ("y", 1.0)), ())
    assert [d for d, _ in fuse("linear", flat)] == ["x", "y"]
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse("borda", C)


class _Flavor:
    def __init__(self, flavor: str):
        self.flavor = flavor


@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_the_recall_msearch_asks_each_list_for_ids_only(flavor):
    engine = Engine(_Flavor(flavor))
    bodies = recall_bodies(engine, ["usb cable", "mouse"], Recall(100, 20),
                           [[0.1, 0.2], [0.3, 0.4]])
    assert len(bodies) == 4 and [b["size"] for b in bodies] == [100, 20, 100, 20]
    assert all(b["_source"] is False and b["docvalue_fields"] == ["id"] for b in bodies)
    knn = bodies[3]["query"]["knn"]
    if flavor == "opensearch":
        assert knn == {"text_vector": {"vector": [0.3, 0.4], "k": 20}}
    else:
        assert knn["field"] == "text_vector" and knn["query_vector"] == [0.3, 0.4]
        assert knn["k"] == 20 and knn["num_candidates"] >= 20
    assert recall_bodies(engine, ["x"], Recall(10)) == [bodies[0] | {
        "size": 10, "query": {"multi_match": {**bodies[0]["query"]["multi_match"],
                                               "query": "x"}}}]
