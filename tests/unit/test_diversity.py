"""The configuration grammar and the diversity stage on hand-made hits (the plugin's served
ranking is tests/engine/test_diversity_engine.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.fakes import FakeTransport, msearch_answering

from esrank.core.errors import InputError
from esrank.engine.base import Engine
from esrank.ranking.configuration import Configuration, parse_configuration
from esrank.ranking.diversity import (
    Diversity,
    Pooled,
    capped,
    intra_list,
    mmr_order,
    reordered,
)
from esrank.ranking.search import Ranker, search

SPEC = Path(__file__).resolve().parents[2] / "esrank" / "serve" / "openapi.yaml"


@pytest.mark.parametrize(("name", "parsed"), [
    ("active", Configuration("active")),
    ("active+rerank20", Configuration("active", 20)),
    ("active+cap2", Configuration("active", 0, Diversity(cap=2))),
    ("chorus-v7+mmr0.7", Configuration("chorus-v7", 0, Diversity(mmr=0.7))),
    ("active+rerank20+mmr.5+cap3", Configuration("active", 20, Diversity(3, 0.5))),
    ("bm25+mmr1", Configuration("bm25", 0, Diversity(mmr=1.0))),
])
def test_a_name_parses_into_its_parts_and_back(name, parsed):
    assert parse_configuration(name) == parsed
    assert parse_configuration(parsed.label) == parsed
    assert parsed.label == name.replace("mmr.5", "mmr0.5")


@pytest.mark.parametrize(("name", "part"), [
    ("active+cap0", "+cap0 is not +capN"),
    ("active+cap101", "+cap101 is not +capN"),
    ("active+mmr0", "+mmr0 is not +mmrL"),
    ("active+mmr1.5", "+mmr1.5 is not +mmrL"),
    ("active+mmr0.0001", "+mmr0.0001 is not +mmrL"),
    ("active+rerank0", "+rerank0 is not +rerankN"),
    ("active+cap2+mmr0.7", "+mmr0.7 is out of place"),
    ("active+cap2+cap3", "+cap comes twice"),
    ("x+capital", "+capital is not +capN"),
])
def test_a_malformed_name_is_an_input_error_naming_the_part(name, part):
    with pytest.raises(InputError, match=re.escape(part)):
        parse_configuration(name)


def test_the_spec_pattern_accepts_exactly_what_the_parser_does():
    pattern = yaml.safe_load(SPEC.read_text())["components"]["schemas"]["Configuration"][
        "pattern"]
    for name in ("active", "a+b", "active+cap2", "active+mmr1.000", "active+mmr0.05",
                 "active+rerank100+mmr0.001+cap100", "active+cap2+mmr0.7", "active+mmr0",
                 "active+mmr0.0001", "active+cap", "x+capital", "a+rerank5+rerank3"):
        try:
            parse_configuration(name)
            parsed = True
        except InputError:
            parsed = False
        assert bool(re.search(pattern, name)) == parsed, name


def test_the_ranker_label_shows_the_stage():
    assert Ranker("bm25", diversity=Diversity(2, 0.7), rerank=20).label == \
        "bm25+rerank20+mmr0.7+cap2"
    assert Ranker("bm25").label == "bm25" and not Ranker("bm25").diversity.on


def _pool(scores, brands, vectors=None):
    vectors = vectors or [None] * len(scores)
    return [Pooled(f"d{i}", s, b, None if v is None else np.array(v, dtype=float))
            for i, (s, b, v) in enumerate(zip(scores, brands, vectors, strict=True))]


def test_a_cap_moves_a_brands_extra_products_below_in_order():
    brands = ["a", "a", "b", "a", None, None, "b", "c"]
    assert capped(range(8), brands, 1) == [0, 2, 4, 5, 7, 1, 3, 6]
    assert capped(range(8), brands, 2) == [0, 1, 2, 4, 5, 6, 7, 3]
    assert capped(range(8), brands, 3) == list(range(8))


def test_mmr_worked_by_hand():
    """Scores 3, 2, 1 -> relevance 1, 0.5, 0; d1 is d0's twin, d2 unlike both. After d0:
    d1 gains 0.5 L - (1 - L) * 1, d2 gains 0: d1 comes second above L = 2/3, d2 below it."""
    pool = _pool([3.0, 2.0, 1.0], [None] * 3, [[1, 0], [1, 0], [0, 1]])
    assert reordered(pool, Diversity(mmr=0.8)) == [0, 1, 2]
    assert reordered(pool, Diversity(mmr=0.5)) == [0, 2, 1]
    vectors = np.array([[1.0, 0], [1.0, 0], [0, 1.0]])
    assert mmr_order([3.0, 2.0, 1.0], vectors, 0.6) == [0, 2, 1]


def test_lambda_one_keeps_the_order_ties_included():
    rng = np.random.default_rng(7)
    scores = sorted(rng.random(30).round(1), reverse=True)  # many ties
    pool = _pool(scores, ["x"] * 30, rng.normal(size=(30, 8)).tolist())
    assert reordered(pool, Diversity(mmr=1.0)) == list(range(30))


def test_mmr_then_the_cap_holds():
    pool = _pool([3.0, 2.0, 1.0, 0.5], ["a", "a", "b", "a"],
                 [[1, 0], [0, 1], [1, 0], [0.7, 0.7]])
    order = reordered(pool, Diversity(cap=1, mmr=0.3))
    assert [pool[i].brand for i in order[:2]] == ["a", "b"]


def test_a_missing_vector_is_like_nothing():
    pool = _pool([2.0, 1.0], [None, None], [[1, 0], None])
    assert reordered(pool, Diversity(mmr=0.5)) == [0, 1]


def test_intra_list_diversity():
    brands, distance = intra_list(["A", " a", "B", None],
                                  [np.array([1.0, 0]), np.array([1.0, 0]), np.array([0, 1.0]),
                                   None])
    # pairs: (A, a) 0, (A, B) 1, (a, B) 1, and the missing vector 1 against each
    assert brands == 2 and distance == pytest.approx(5 / 6)


def test_search_applies_the_cap_after_reading_brands_by_id():
    hits = {"hits": {"hits": [{"_id": d, "_score": s, "_source": {"title": d}}
                              for d, s in (("d1", 3.0), ("d2", 2.0), ("d3", 1.0))]}}
    brands = {"hits": {"hits": [{"_id": d, "_source": {"supplier": b}}
                                for d, b in (("d1", "Acme"), ("d2", "ACME "), ("d3", "Zed"))]}}
    transport = FakeTransport({("POST", "/_msearch"): msearch_answering(hits),
                               ("POST", "/products/_search"): brands})
    result = search(Engine(transport), "products", "speaker",
                    Ranker("bm25", diversity=Diversity(cap=1)), size=2)
    assert [h.doc_id for h in result.hits] == ["d1", "d3"] and result.ranker == "bm25+cap1"
    assert [h.score for h in result.hits] == [3.0, 1.0]  # each keeps its score
    msearch, by_id = transport.calls
    assert '"size": 50' in msearch[2]  # the pool, though 2 are shown
    assert by_id[2]["_source"] == ["supplier"]  # a cap alone needs no vectors
    # hits that carry their supplier need no read by id
    for hit, brand in zip(hits["hits"]["hits"], ("Acme", "ACME ", "Zed"), strict=True):
        hit["_source"]["supplier"] = brand
    transport.calls.clear()
    again = search(Engine(transport), "products", "speaker",
                   Ranker("bm25", diversity=Diversity(cap=1)), size=2)
    assert [h.doc_id for h in again.hits] == ["d1", "d3"] and len(transport.calls) == 1
