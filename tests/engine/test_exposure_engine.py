"""Exposure by supplier through the real engine: a four-product index whose BM25 order is
known, evaluated as `esrank evaluate` does, gives the figures worked by hand in
tests/unit/test_exposure.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from esrank.catalogue.index import index_catalogue

ROOT = Path(__file__).resolve().parents[2]
# four-word titles: BM25 orders each query by its term's count alone (1 shard, same lengths)
TOY = [("A", "lamp lamp lamp desk", "Acme"), ("B", "lamp lamp desk desk", "Bolt"),
       ("C", "lamp desk desk desk", "Acme"), ("E", "luminaire floor stand black", "Dyna")]
GRADES = [("lamp", "A", 1), ("lamp", "B", 3), ("lamp", "C", 2), ("lamp", "E", 2),
          ("desk", "C", 3), ("desk", "B", 1), ("desk", "A", 0)]
ACME = 1.5 / (1 + 1 / math.log2(3) + 0.5)  # Acme's exposure share: ranks 1 and 3 of both


@pytest.fixture()
def toy(engine, alias, encoder, tmp_path) -> tuple[str, Path]:
    """The toy index (its alias) and its judgments file."""
    products = tmp_path / "toy.jsonl"
    products.write_text("".join(json.dumps({"id": i, "title": t, "supplier": s}) + "\n"
                                for i, t, s in TOY))
    index_catalogue(engine, alias, [products], encoder, progress=False)
    judgments = tmp_path / "toy.csv"
    judgments.write_text("query,docid,rating\n" + "".join(f"{q},{d},{g}\n"
                                                          for q, d, g in GRADES))
    return alias, judgments


def test_evaluate_gives_the_hand_worked_exposure(engine, toy, cli_env):
    index, judgments = toy
    out = subprocess.run([sys.executable, "-m", "esrank.cli", "evaluate", "--judgments",
                          str(judgments), "--config", "bm25", "--config", "bm25-title",
                          "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**cli_env, "ESRANK_INDEX": index})
    assert out.returncode == 0, out.stderr
    configs = json.loads(out.stdout)["configs"]
    # the known BM25 order: lamp A, B, C; desk C, B, A (title-only BM25 the same)
    assert {q: v["ndcg@10"] for q, v in configs["bm25"]["per_query"].items()} == {
        "lamp": pytest.approx((1 + 3 / math.log2(3) + 2 / 2) / (3 + 2 / math.log2(3) + 2 / 2
                                                               + 1 / math.log2(5))),
        "desk": pytest.approx((3 + 1 / math.log2(3)) / (3 + 1 / math.log2(3)))}
    for config in ("bm25", "bm25-title"):  # side by side, each with the hand-worked figures
        e = configs[config]["exposure"]
        assert (e["queries"], e["empty_queries"], e["suppliers"], e["depth"]) == (2, 0, 3, 10)
        assert e["disparity"] == pytest.approx(ACME - 0.5625)  # 0.1414
        assert e["per_query_disparity"] == pytest.approx(0.1875)
        assert e["judged_share"] == pytest.approx(1.0)
        assert e["over_exposed"] == [{"supplier": "Acme", "exposure": pytest.approx(ACME),
                                      "relevance": pytest.approx(0.5625)}]
        assert [(s["supplier"], s["exposure"], s["relevance"]) for s in e["under_exposed"]] \
            == [("Dyna", 0.0, pytest.approx(0.125)),
                ("Bolt", pytest.approx(1 - ACME), pytest.approx(0.3125))]


def test_the_text_shows_each_configurations_disparity(engine, toy, engine_settings, encoder):
    from esrank.app import App
    from esrank.cli.evaluation import evaluate_text
    from esrank.evaluation.evaluate import evaluate

    index, judgments = toy
    app = App(engine_settings(index=index, active_set="no-models-here"), engine=engine,
              encoder=encoder)
    text = evaluate_text(evaluate(app, judgments, ("bm25",)), per_query=False).splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("exposure by supplier"))
    assert text[at + 2].split() == ["bm25", "0.1414", "0.1875", "100.0%", "Acme", "70.4%",
                                    "/", "56.2%", "Dyna", "0.0%", "/", "12.5%"]
