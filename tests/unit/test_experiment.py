"""Online experiments (bucketing, team-draft interleaving, the report's statistics) and the
shopper simulator's model of a shopper."""

from __future__ import annotations

import math
import random

import pytest

from esrank.catalogue.lookup import ProductFacts
from esrank.core.errors import InputError
from esrank.judgments.clicks import Session, Shown
from esrank.personal.experiment import (
    Experiment,
    Rate,
    bucket,
    report,
    sessions_needed,
    sign_test,
    team_draft,
)
from esrank.personal.sim import SimShopper, browse, utility, utility_ndcg


def test_bucketing_is_stable_balanced_and_per_experiment():
    arms = ("control", "treatment")
    first = [bucket(f"u{i}", "exp1", arms) for i in range(2000)]
    assert first == [bucket(f"u{i}", "exp1", arms) for i in range(2000)]
    assert 0.45 < first.count("treatment") / 2000 < 0.55
    other = [bucket(f"u{i}", "exp2", arms) for i in range(2000)]
    agree = sum(a == b for a, b in zip(first, other, strict=True)) / 2000
    assert 0.45 < agree < 0.55  # independent across experiments


def test_team_draft_keeps_each_teams_order_and_balance():
    a, b = list("abcdefgh"), list("dchgxyab")
    for seed in range(50):
        page, teams = team_draft(a, b, 8, str(seed))
        assert len(page) == len(set(page)) == 8 and set(page) == set(teams)
        for team, ranking in (("A", a), ("B", b)):
            picked = [d for d in page if teams[d] == team]
            assert picked == sorted(picked, key=ranking.index)  # in the team's own order
        counts = [list(teams.values()).count(t) for t in "AB"]
        assert abs(counts[0] - counts[1]) <= 1
        assert (page, teams) == team_draft(a, b, 8, str(seed))  # the seed decides
    same, teams = team_draft(a, a, 6, "s")
    assert same == a[:6]
    short, _ = team_draft(["x"], ["y"], 10, "s")
    assert sorted(short) == ["x", "y"]


def test_statistics_by_hand():
    # 9 of 10: 2 * (C(10,9) + C(10,10)) / 2^10
    assert sign_test(9, 10) == pytest.approx(2 * 11 / 1024)
    assert sign_test(5, 10) == 1.0 and sign_test(0, 0) == 1.0
    low, high = Rate(5, 10).interval
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    # ((1.96 * 0.5 + 0.8416 * sqrt(0.24)) / 0.1)^2 = 193.9 decided sessions; half decided: 2x
    assert sessions_needed(0.6, 1.0) == 194
    assert sessions_needed(0.6, 0.5) == 388
    assert sessions_needed(0.5, 1.0) is None


def _session(qid, clicked, teams=None, arm=None, experiment="e"):
    results = tuple(Shown(d, p, v) for p, (d, v) in enumerate(clicked, 1))
    return Session(qid, "tv", results, None, {"experiment": experiment, "arm": arm,
                                              "teams": teams})


def test_report_counts_interleaved_wins_and_arm_rates():
    exp = Experiment("e", "base", "personal")
    teams = {"a": "A", "b": "B", "c": "B"}
    sessions = [
        _session("1", [("a", 0), ("b", 1.0), ("c", 4.0)], teams),  # treatment 2:0
        _session("2", [("a", 1.0), ("b", 0), ("c", 0)], teams),  # control 1:0
        _session("3", [("a", 1.0), ("b", 1.0), ("c", 0)], teams),  # tie
        _session("4", [("a", 0), ("b", 0), ("c", 0)], teams),  # no click: nothing
        _session("5", [("a", 0), ("b", 2.0), ("c", 0)], teams, experiment="other"),
    ]
    result = report(exp, sessions)
    assert result.wins == {"control": 1, "treatment": 1, "tie": 1}
    assert result.preference == 0.5 and result.p_value == 1.0
    ab = Experiment("e", "base", "personal", "ab")
    rates = report(ab, [_session("1", [("a", 4.0)], arm="treatment"),
                        _session("2", [("a", 2.0)], arm="treatment"),
                        _session("3", [("a", 0)], arm="control")]).arms
    assert rates["treatment"]["click"].hits == 2 and rates["treatment"]["purchase"].hits == 1
    assert rates["treatment"]["add_to_cart"].hits == 2 and rates["control"]["click"].hits == 0
    with pytest.raises(InputError, match="both arms"):
        Experiment("e", "x", "x")


# -- the simulated shopper ------------------------------------------------------------------


def test_preference_and_utility():
    s = SimShopper("u", ("HP",), 100.0, 0.5)
    assert s.preference(ProductFacts("HP", 100.0)) == pytest.approx(1.0)
    assert s.preference(ProductFacts("Canon", 100.0)) == pytest.approx(0.4)
    far = s.preference(ProductFacts("HP", 100.0 * math.e))  # 2 sigma away in log price
    assert far == pytest.approx(0.6 + 0.4 * math.exp(-2))
    assert s.preference(None) == 0.0
    assert utility(3, 1.0) == 3.0 and utility(3, 0.0) == 0.75 and utility(0, 1.0) == 0.0


def test_browsing_prefers_what_the_shopper_wants():
    facts = {"hp": ProductFacts("HP", 100.0), "cn": ProductFacts("Canon", 100.0)}
    s = SimShopper("u", ("HP",), 100.0, 0.5)
    rng = random.Random(1)
    clicks = {"hp": 0, "cn": 0}
    for _ in range(2000):
        for action, doc, _ in browse(s, ["cn", "hp"], {"hp": 3, "cn": 3}, facts, rng):
            clicks[doc] += action == "click"
    # HP sits lower (position bias) yet is clicked more: utility 3.0 vs 1.65
    assert clicks["hp"] > clicks["cn"]


def test_utility_ndcg():
    facts = {"hp": ProductFacts("HP", 100.0), "cn": ProductFacts("Canon", 100.0)}
    s = SimShopper("u", ("HP",), 100.0, 0.5)
    grades = {"hp": 2, "cn": 2}
    assert utility_ndcg(s, ["hp", "cn"], grades, facts) == pytest.approx(1.0)
    assert utility_ndcg(s, ["cn", "hp"], grades, facts) < 1.0
    assert utility_ndcg(s, ["cn"], {"cn": 0}, facts) is None


# -- behaviour signals ----------------------------------------------------------------------


def test_signals_by_hand():
    from esrank.personal.signals import product_signals

    # position click rates: p1 1/3, p2 1/3; A shown p1, p2, p2 -> expects 1 click, got 2
    # (one bought); B shown p2, p1, p1 -> expects 1, got 0
    sessions = [Session("1", "tv", (Shown("A", 1, 1.0), Shown("B", 2, 0.0))),
                Session("2", "tv", (Shown("B", 1, 0.0), Shown("A", 2, 4.0))),
                Session("3", "tv", (Shown("B", 1, 0.0), Shown("A", 2, 0.0)))]
    signals = product_signals(sessions, prior=10)
    a, b = signals["A"], signals["B"]
    assert (a.impressions, a.clicks, a.purchases) == (3, 2, 1)
    assert a.ctr == pytest.approx(12 / 11) and b.ctr == pytest.approx(10 / 11)
    # purchases per click over the log: 1 / 2
    assert a.conversion == pytest.approx((1 + 5) / 12) and b.conversion == pytest.approx(0.5)
    assert a.popularity == pytest.approx(math.log(6)) and b.popularity == 0.0
    assert a.to_doc() == {"signals": {"ctr": round(12 / 11, 5), "conversion": 0.5,
                                      "popularity": round(math.log(6), 5), "impressions": 3}}


def test_simulated_shoppers_search_their_interests():
    from esrank.personal.sim import make_shoppers

    facts = {"hp1": ProductFacts("HP", 100.0), "cn1": ProductFacts("Canon", 50.0),
             "hp2": ProductFacts("HP", 300.0)}
    judged = {"laptop": {"hp1": 3, "cn1": 0}, "camera": {"cn1": 2}, "printer": {"hp2": 1}}
    for s in make_shoppers(20, facts, judged, prefix="u", seed=3):
        assert set(s.brands) <= {"HP", "Canon"}
        assert s.interests == tuple(sorted(q for q, grades in judged.items()
                                           if any(g > 0 and facts[d].brand in s.brands
                                                  for d, g in grades.items())))
        rng = random.Random(0)
        picked = [s.pick_query(sorted(judged), rng) for _ in range(1000)]
        share = sum(q in s.interests for q in picked) / 1000
        assert share >= 0.8 - 0.05
