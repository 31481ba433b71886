"""Exposure by supplier against relevance, on a toy ranking worked by hand."""

from __future__ import annotations

import math

import pytest

from esrank.evaluation.exposure import NO_SUPPLIER, docs_to_look_up, exposure_of
from esrank.judgments.lists import Judgment, JudgmentList
from esrank.judgments.metrics import Evaluator

# four products, three suppliers (tests/engine/test_exposure_engine.py indexes the same toy)
SUPPLIER = {"A": "Acme", "B": "Bolt", "C": "Acme", "E": "Dyna"}
JUDGED = Evaluator(JudgmentList(tuple(Judgment(q, q, d, g) for q, d, g in (
    ("lamp", "A", 1), ("lamp", "B", 3), ("lamp", "C", 2), ("lamp", "E", 2),
    ("desk", "C", 3), ("desk", "B", 1), ("desk", "A", 0),
    ("chair", "A", 0)))))
RUN = {"lamp": ["A", "B", "C"], "desk": ["C", "B", "A"], "chair": ["A"]}
W2 = 1 / math.log2(3)  # rank 2's weight, 0.6309; rank 1 gets 1, rank 3 gets 1/log2(4) = 0.5
ACME = 1.5 / (1 + W2 + 0.5)  # Acme holds ranks 1 and 3 of both queries: 0.7039


def test_a_toy_ranking_worked_by_hand():
    """Each query shares one unit of exposure over its three shown ranks (weights 1, 0.6309,
    0.5; total 2.1309) and one unit of relevance over its judged grades; "chair" has no grade
    above 0 and is left out.

    lamp: exposure Acme (1 + 0.5) / 2.1309 = 0.7039, Bolt 0.6309 / 2.1309 = 0.2961;
          relevance (grades 1 + 3 + 2 + 2 = 8) Acme 3/8, Bolt 3/8, Dyna 2/8;
          distance (|0.7039 - 0.375| + |0.2961 - 0.375| + |0 - 0.25|) / 2 = 0.3289.
    desk: exposure the same; relevance (3 + 1 = 4) Acme 3/4, Bolt 1/4;
          distance (|0.7039 - 0.75| + |0.2961 - 0.25|) / 2 = 0.0461.
    Means over the two queries: exposure Acme 0.7039, Bolt 0.2961, Dyna 0; relevance Acme
    (0.375 + 0.75) / 2 = 0.5625, Bolt (0.375 + 0.25) / 2 = 0.3125, Dyna 0.125.
    Disparity (|0.7039 - 0.5625| + |0.2961 - 0.3125| + |0 - 0.125|) / 2 = 0.7039 - 0.5625
    = 0.1414; per query (0.3289 + 0.0461) / 2 = 0.1875 (the two distances sum to 0.75 - 0.375).
    """
    e = exposure_of(RUN, JUDGED, SUPPLIER)
    assert e.queries == 2 and e.suppliers == 3 and e.judged_share == pytest.approx(1.0)
    assert e.disparity == pytest.approx(ACME - 0.5625) == pytest.approx(0.14142, abs=1e-5)
    assert e.per_query == pytest.approx(0.1875)
    assert [(s.supplier, s.exposure, s.relevance) for s in e.over] == [
        ("Acme", pytest.approx(ACME), pytest.approx(0.5625))]
    # most under-exposed first: Dyna's gap 0.125, then Bolt's 0.3125 - 0.2961 = 0.0164
    assert [(s.supplier, s.exposure, s.relevance) for s in e.under] == [
        ("Dyna", 0.0, pytest.approx(0.125)), ("Bolt", pytest.approx(1 - ACME),
                                              pytest.approx(0.3125))]
    assert e.to_dict()["over_exposed"][0]["supplier"] == "Acme"
    assert docs_to_look_up(RUN, JUDGED) == {"A", "B", "C", "E"}


def test_exposure_proportional_to_relevance_is_zero_and_unknowns_are_counted():
    """One query, "desk" judged C 3 and B 1: ranks 1 and 2 shown, C (Acme) then B (Bolt).
    Exposure 1 / 1.6309 = 0.6131 and 0.3869 against relevance 0.75 and 0.25."""
    one = Evaluator(JudgmentList((Judgment("desk", "desk", "C", 3),
                                  Judgment("desk", "desk", "B", 1))))
    e = exposure_of({"desk": ["C", "B"]}, one, SUPPLIER)
    assert e.disparity == pytest.approx(0.75 - 1 / (1 + W2))
    # the same share to both: no disparity, nobody over- or under-exposed
    even = Evaluator(JudgmentList((Judgment("q", "q", "A", 2), Judgment("q", "q", "B", 2))))
    assert exposure_of({"q": ["A"]}, even, {"A": "Acme", "B": "Acme"}).disparity == 0.0
    # an unjudged product without a supplier at rank 2 takes exposure and earns nothing
    e = exposure_of({"desk": ["C", "X"]}, one, SUPPLIER)
    assert e.judged_share == pytest.approx(1 / (1 + W2))
    assert e.over[0].supplier == NO_SUPPLIER and e.over[0].relevance == 0.0
    # a query that shows nothing gives its exposure to nobody: the whole distance, and its
    # suppliers under-exposed; the query set stays the judgments' for every configuration
    e = exposure_of({}, one, SUPPLIER)
    assert (e.queries, e.empty, e.disparity, e.per_query, e.judged_share) == (1, 1, 1.0, 1.0, 0)
    assert [s.supplier for s in e.under] == ["Acme", "Bolt"] and not e.over
    # lamp as before (distance 0.3289 = 0.7039 - 0.375), desk empty (1): exposure
    # 0.7039 / 2 to Acme, 0.2961 / 2 to Bolt, half the unit lost; relevance as in the toy
    e = exposure_of({"lamp": ["A", "B", "C"]}, JUDGED, SUPPLIER)
    assert e.per_query == pytest.approx((ACME - 0.375 + 1) / 2)
    assert e.disparity == pytest.approx((abs(ACME / 2 - 0.5625) + abs((1 - ACME) / 2 - 0.3125)
                                         + 0.125 + 0.5) / 2)
