from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from esrank.core.errors import InputError
from esrank.judgments.agreement import agreement, cohen_kappa
from esrank.judgments.clicks import Session, Shown, coec, sdbn, sessions_of
from esrank.judgments.lists import (
    Judgment,
    JudgmentList,
    read_csv,
    read_judgments,
    read_ranklib,
    read_srw_json,
    read_trec,
    write_csv,
    write_ranklib,
    write_srw_json,
    write_trec,
)
from esrank.ubi.log import UbiEvent, UbiQuery, read_ndjson

DATA = Path(__file__).resolve().parent.parent / "data" / "judgments"
ROOT = Path(__file__).resolve().parents[2]
CHORUS = ROOT / "esrank" / "data" / "chorus" / "judgments.csv"
UBI = ROOT / "tests" / "data" / "ubi_esci_sample"


@pytest.fixture()
def small() -> JudgmentList:
    return read_csv(DATA / "small.csv")


# ------------------------------------------------------------------ records and readers


def test_small_csv_records(small):
    assert len(small) == 5
    assert small.queries() == {"1": "laptop", "2": "usb, cable", "3": "wireless mouse"}
    assert [j.doc_id for j in small.by_query()["2"]] == ["d3", "d1"]
    assert list(small)[0] == Judgment("1", "laptop", "d1", 3)
    assert small.source == str(DATA / "small.csv")


def test_round_trip_csv(small, tmp_path):
    write_csv(small, tmp_path / "j.csv")
    assert read_csv(tmp_path / "j.csv") == small


def test_round_trip_ranklib(small, tmp_path):
    write_ranklib(small, tmp_path / "j.txt")
    back = read_ranklib(tmp_path / "j.txt")
    assert back == small
    assert back.queries() == small.queries()


def test_round_trip_trec(small, tmp_path):
    write_trec(small, tmp_path / "j.qrels")
    assert read_trec(tmp_path / "j.qrels", queries=small.queries()) == small
    bare = read_trec(tmp_path / "j.qrels")
    assert bare.queries() == {"1": "1", "2": "2", "3": "3"}  # default query text = qid


def test_round_trip_srw_json(small, tmp_path):
    write_srw_json(small, tmp_path / "j.json")
    assert read_srw_json(tmp_path / "j.json") == small


def test_read_judgments_dispatch(small, tmp_path):
    write_ranklib(small, tmp_path / "j.txt")
    write_trec(small, tmp_path / "j.qrels")
    write_srw_json(small, tmp_path / "j.json")
    assert read_judgments(DATA / "small.csv") == small
    assert read_judgments(tmp_path / "j.txt") == small
    assert read_judgments(tmp_path / "j.qrels", queries=small.queries()) == small
    assert read_judgments(tmp_path / "j.json", format="srw") == small
    with pytest.raises(InputError, match="unknown judgment format"):
        read_judgments(tmp_path / "j.xyz")


def test_ranklib_ignores_features_and_titles(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# qid:1: laptop\n3 qid:1 1:0.5 2:1.25 # d1 Some Laptop\n0 qid:7 # d2\n")
    jl = read_ranklib(path)
    assert list(jl) == [Judgment("1", "laptop", "d1", 3), Judgment("7", "7", "d2", 0)]


def test_chorus_csv():
    jl = read_csv(CHORUS)
    assert len(jl.queries()) == 97
    assert len(jl) == 2484
    assert jl.queries()["1"] == "laptop"
    assert {j.grade for j in jl} <= {0, 1, 2, 3, 4}


def test_srw_json_esci_sample():
    jl = read_srw_json(UBI / "esci_us_judgments.json")
    assert len(jl.queries()) == 150
    assert len(jl) == 6678
    # 100.000 Exact -> 3, 10.000 Substitute -> 2, 1.000 Complement -> 1, 0.000 Irrelevant -> 0
    first = list(jl)[0]
    assert (first.query, first.doc_id, first.grade) == ("t towels kitchen", "B07NCQWCQS", 3)
    assert {j.grade for j in jl} == {0, 1, 2, 3}


def test_srw_json_unknown_rating(tmp_path):
    path = tmp_path / "j.json"
    path.write_text('{"judgmentRatings": [{"query": "q", "ratings": '
                    '[{"docId": "a", "rating": "50.000"}]}]}')
    with pytest.raises(InputError, match=r"judgmentRatings\[0\]\.ratings\[0\].*50\.000"):
        read_srw_json(path)


def test_srw_json_refuses_grade_4(tmp_path):
    jl = JudgmentList((Judgment("1", "q", "d", 4),))
    with pytest.raises(InputError, match="grades 0..3"):
        write_srw_json(jl, tmp_path / "j.json")


# ------------------------------------------------------------------ checks


def test_duplicate_collapsed_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="esrank.judgments.lists"):
        jl = read_csv(DATA / "duplicate.csv")
    assert len(jl) == 2
    assert "line 4" in caplog.text and "line 2" in caplog.text


def test_conflict_names_both_lines():
    with pytest.raises(InputError) as e:
        read_csv(DATA / "conflict.csv")
    msg = str(e.value)
    assert msg.startswith(f"{DATA / 'conflict.csv'}:4:")
    assert "3 at line 2" in msg and "1 at line 4" in msg
    assert e.value.line == 4


def test_bad_grade_names_file_and_line():
    with pytest.raises(InputError, match=r"bad_grade\.csv:3: grade 7 is outside 0\.\.4"):
        read_csv(DATA / "bad_grade.csv")
    # a smaller scale is an argument
    with pytest.raises(InputError, match=r"small\.csv:2: grade 3 is outside 0\.\.2"):
        read_csv(DATA / "small.csv", max_grade=2)


def test_non_integer_grade_ranklib():
    with pytest.raises(InputError, match=r"bad_grade_ranklib\.txt:6: grade '2\.5'"):
        read_ranklib(DATA / "bad_grade_ranklib.txt")


def test_csv_missing_header(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text("laptop,d1,3\n")
    with pytest.raises(InputError, match=r"j\.csv:1: header lacks"):
        read_csv(path)


# ------------------------------------------------------------------ click models


def _sessions() -> list[Session]:
    # query "q", three results per page (position = 1-based rank); * = clicked
    #   s1: A*  B   C
    #   s2: A   B*  C
    #   s3: B*  A   C*
    def s(name, *results):
        return Session(name, "q", tuple(Shown(d, p, c) for d, p, c in results))

    return [
        s("s1", ("A", 1, True), ("B", 2, False), ("C", 3, False)),
        s("s2", ("A", 1, False), ("B", 2, True), ("C", 3, False)),
        s("s3", ("B", 1, True), ("A", 2, False), ("C", 3, True)),
    ]


def test_coec_by_hand(caplog):
    # position priors: p1 2 clicks/3 = 2/3, p2 1/3, p3 1/3
    # A: shown at p1, p1, p2 -> expected 2/3+2/3+1/3 = 5/3, 1 click -> 0.6 -> grade 1 (0.5..1)
    # B: shown at p2, p2, p1 -> expected 4/3, 2 clicks -> 1.5 -> grade 2 (1..2)
    # C: shown at p3 x3 -> expected 1, 1 click -> 1.0 -> grade 2 (cut 1.0 inclusive)
    jl = coec(_sessions(), min_impressions=3)
    assert {j.doc_id: j.grade for j in jl} == {"A": 1, "B": 2, "C": 2}
    assert jl.queries() == {"1": "q"}
    # every doc has 3 impressions: a threshold of 4 drops all three, and says so
    with caplog.at_level(logging.INFO, logger="esrank.judgments.clicks"):
        assert len(coec(_sessions(), min_impressions=4)) == 0
    assert "dropped 3" in caplog.text


def test_sdbn_by_hand(caplog):
    # examined = at or above the last click: s1 {A}, s2 {A, B}, s3 {B, A, C}
    # A: examined 3, clicked 1 (s1, last click there) -> a = 1/3, s = 1/1 -> 0.333 -> grade 2
    # B: examined 2, clicked 2, last click once (s2)  -> a = 1,   s = 1/2 -> 0.5   -> grade 3
    # C: examined 1, clicked 1, last click once (s3)  -> a = 1,   s = 1   -> 1.0   -> grade 3
    jl = sdbn(_sessions(), min_impressions=1)
    assert {j.doc_id: j.grade for j in jl} == {"A": 2, "B": 3, "C": 3}
    # min_impressions counts examinations: C (1) is dropped at 2
    with caplog.at_level(logging.INFO, logger="esrank.judgments.clicks"):
        jl2 = sdbn(_sessions(), min_impressions=2)
    assert {j.doc_id for j in jl2} == {"A", "B"}
    assert "dropped 1" in caplog.text


def test_read_ubi_sample():
    sessions = sessions_of(*read_ndjson(UBI / "ubi_queries_events.ndjson"))
    clicked = [s for s in sessions if s.clicked]
    assert len(sessions) > 0 and len(clicked) > 0
    first = sessions[0]
    assert first.query == "futon frames full size without mattress"
    assert [r.position for r in first.results] == [1, 2, 3, 4, 5]
    assert len(sdbn(sessions, min_impressions=1)) > 0


def test_an_action_counts_only_on_a_doc_its_query_showed(caplog):
    """A UBI log holds what any client reported: a purchase of a product the query never
    showed is skipped (and counted), not added to the page."""
    queries = [UbiQuery("q1", "tv"), UbiQuery("q2", "tv", hit_ids=("A", "H"))]
    events = [UbiEvent("impression", "q1", "A", 1), UbiEvent("impression", "q1", "B", 2),
              UbiEvent("impression", "q2", "A", 1),
              UbiEvent("click", "q1", "B", 2),
              UbiEvent("purchase", "q1", "X", 3),   # q1 never showed X
              UbiEvent("purchase", "q2", "B", 2),   # B was shown by q1, not by q2
              UbiEvent("add_to_cart", "q2", "H"),   # in q2's hit ids: at its rank there
              UbiEvent("click", None, "A", 1)]      # no query: nothing to check it against
    with caplog.at_level(logging.WARNING, logger="esrank.judgments.clicks"):
        sessions = sessions_of(queries, events)
    assert [[(r.doc_id, r.position, r.value) for r in s.results] for s in sessions] == [
        [("A", 1, 0.0), ("B", 2, 1.0)], [("A", 1, 0.0), ("H", 2, 2.0)]]
    assert "3 action(s) on a doc their query never showed" in caplog.text
    grades = {(j.query, j.doc_id) for j in coec(sessions, min_impressions=1)}
    assert ("tv", "X") not in grades


def test_read_ubi_bad_json(tmp_path):
    path = tmp_path / "u.ndjson"
    path.write_text('{"index": {"_index": "ubi_events"}}\n{not json\n')
    with pytest.raises(InputError, match=r"u\.ndjson:2: invalid JSON"):
        read_ndjson(path)


# ------------------------------------------------------------------ agreement


def test_kappa_2x2_by_hand():
    # a = 0 0 1 1 1 1, b = 0 1 1 1 1 0 -> agree 4/6 = 2/3
    # marginals a (1/3, 2/3), b (1/3, 2/3) -> pe = 1/9 + 4/9 = 5/9
    # kappa = (2/3 - 5/9) / (1 - 5/9) = (1/9) / (4/9) = 0.25; with 2 categories the
    # quadratic weights are 0/1, so weighted kappa is also 0.25
    a, b = [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]
    assert cohen_kappa(a, b) == pytest.approx(0.25)
    assert cohen_kappa(a, b, weights="quadratic") == pytest.approx(0.25)


def test_kappa_3x3_by_hand():
    # a = 0 1 2 0 1 2, b = 0 1 2 1 2 1: agree 3/6; a marginal (1/3 each), b (1/6, 3/6, 2/6)
    # pe = 1/3 * (1/6 + 3/6 + 2/6) = 1/3 -> kappa = (1/2 - 1/3) / (2/3) = 0.25
    # quadratic w = ((i-j)/2)^2: observed disagreement = 3 cells off by one * 1/4 * 1/6 = 1/8
    # expected = 1/3 * (1/6*(0+1/4+1) + 3/6*(1/4+0+1/4) + 2/6*(1+1/4+0)) = 7/24
    # weighted kappa = 1 - (1/8) / (7/24) = 1 - 3/7 = 4/7
    a, b = [0, 1, 2, 0, 1, 2], [0, 1, 2, 1, 2, 1]
    assert cohen_kappa(a, b) == pytest.approx(0.25)
    assert cohen_kappa(a, b, weights="quadratic") == pytest.approx(4 / 7)


def test_kappa_undefined_is_nan():
    assert math.isnan(cohen_kappa([2, 2], [2, 2]))
    assert math.isnan(cohen_kappa([], []))


def test_agreement(small):
    other = JudgmentList((
        Judgment("9", "laptop", "d1", 3),
        Judgment("9", "laptop", "d2", 1),
        Judgment("8", "usb, cable", "d3", 2),
        Judgment("7", "unseen", "d1", 0),
    ))
    rep = agreement(small, other)
    assert rep["n"] == 3
    assert rep["exact"] == pytest.approx(2 / 3)
    # grades small (3, 0, 2) vs other (3, 1, 2): same order -> rank correlations 1
    assert rep["spearman"] == pytest.approx(1.0)
    assert rep["kendall"] == pytest.approx(1.0)
    assert set(rep["per_query"]) == {"laptop"}  # "usb, cable" has only one shared pair
    laptop = rep["per_query"]["laptop"]
    assert laptop["n"] == 2 and laptop["exact"] == pytest.approx(0.5)
    # per query the confusion of (3,0) vs (3,1): po = 1/2, categories 0..3;
    # a marginal {0: 1/2, 3: 1/2}, b {1: 1/2, 3: 1/2} -> pe = 1/4 -> kappa = 1/3
    assert laptop["kappa"] == pytest.approx(1 / 3)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("query,docid,rating\nlaptop,1,2\ncaf\xe9,2,3\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.csv:3: not UTF-8 \(byte 0xe9\)"):
        read_judgments(path)


def test_a_missing_or_unreadable_file_is_an_input_error_naming_it(tmp_path):
    for fmt in ("csv", "ranklib", "trec", "srw"):
        with pytest.raises(InputError, match=f"{tmp_path / 'nope'}: cannot read judgments "
                                             "file: No such file or directory"):
            read_judgments(tmp_path / "nope", fmt)
    with pytest.raises(InputError, match="cannot read judgments file: Is a directory"):
        read_judgments(tmp_path, "csv")


def test_click_models_are_looked_up_by_name_and_an_unknown_one_names_the_choices():
    from esrank.judgments.clicks import CLICK_MODELS, click_model

    assert click_model("coec") is coec and click_model("sdbn") is sdbn
    assert sorted(CLICK_MODELS) == ["coec", "sdbn"]  # esrank judgments from-clicks --model
    with pytest.raises(InputError, match=r"no click model 'ubm' \(choices: coec, sdbn\)"):
        click_model("ubm")
