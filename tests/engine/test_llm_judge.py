"""`esrank judgments llm` on the real engine: product texts read from the index, graded by the
packaged SmolLM2 through the OpenAI-compatible API (`esrank llm serve`'s app, served by
waitress on a local port) and through the library directly, then calibrated and re-graded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading

import pytest
from support.chorus_slice import SLICE

from esrank.evaluation.runs import EVAL_HITS, EVAL_QUERIES
from esrank.judgments.llm_judge import Calibration, read_grades
from esrank.serve.llm_api import create_llm_app


@pytest.fixture()
def endpoint(llm):
    from waitress.server import create_server

    server = create_server(create_llm_app(llm), host="127.0.0.1", port=0, threads=1)
    threading.Thread(target=server.run, daemon=True).start()
    yield f"http://127.0.0.1:{server.effective_port}/v1"
    server.close()


def _cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esrank.cli", "judgments", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_llm_judgments_through_an_endpoint_and_locally_agree_and_calibrate(
        engine, slice_alias, cli_env, endpoint, tmp_path, llm):
    ids = [json.loads(line)["id"] for line in SLICE.read_text().splitlines()[:12]]
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "docid", "rating"])
        w.writerows([["usb cable", ids[0], 3], ["usb cable", ids[1], 0],
                     ["printer", ids[2], 2], ["printer", ids[3], 1],
                     ["printer", "no-such-product", 0]])
    env = {**cli_env, "ESRANK_INDEX": slice_alias}

    via_api = _cli(env, "llm", str(pairs), "-o", str(tmp_path / "api.csv"), "--json",
                   "--endpoint", endpoint)
    assert via_api.returncode == 0, via_api.stderr
    report = json.loads(via_api.stdout)
    assert report["graded"] == 4 and report["not_in_index"] == ["no-such-product"]
    assert report["model"] == llm.name and report["model_version"] == llm.version
    api = read_grades(tmp_path / "api.csv")
    assert [(g.query, g.doc_id) for g in api] == [("usb cable", ids[0]), ("usb cable", ids[1]),
                                                  ("printer", ids[2]), ("printer", ids[3])]
    assert all(g.grade in range(4) and 0 <= g.score <= 3 for g in api)
    assert {g.prompt for g in api} == {report["prompt"]}

    local = _cli(env, "llm", str(pairs), "-o", str(tmp_path / "local.csv"))
    assert local.returncode == 0, local.stderr
    direct = read_grades(tmp_path / "local.csv")
    # the same model behind both: the API passes on the same answer probabilities
    assert [g.grade for g in direct] == [g.grade for g in api]
    assert max(abs(a.score - b.score) for a, b in zip(api, direct, strict=True)) < 1e-3
    assert {g.model_version for g in direct} == {llm.version}

    cal = _cli(env, "calibrate", str(tmp_path / "api.csv"), str(pairs), "-o",
               str(tmp_path / "cal.json"), "--json")
    assert cal.returncode == 0, cal.stderr
    fitted = json.loads(cal.stdout)
    assert fitted["pairs"] == 4
    again = _cli(env, "llm", str(pairs), "-o", str(tmp_path / "calibrated.csv"),
                 "--endpoint", endpoint, "--calibration", str(tmp_path / "cal.json"))
    assert again.returncode == 0, again.stderr
    calibrated = read_grades(tmp_path / "calibrated.csv")
    assert {g.calibration for g in calibrated} == {fitted["calibration"]}
    mapping = Calibration.load(tmp_path / "cal.json")
    assert [g.grade for g in calibrated] == [mapping.grade(g.score) for g in api]


def test_holes_of_a_ranking_are_graded_and_evaluated_as_machine_grades(
        engine, slice_alias, cli_env, endpoint, tmp_path):
    human = tmp_path / "human.csv"
    human.write_text("query,docid,rating\n"
                     + "".join(f"{q},{json.loads(line)['id']},3\n" for q, line in
                               zip(("usb cable", "printer"), SLICE.read_text().splitlines(),
                                   strict=False)))
    env = {**cli_env, "ESRANK_INDEX": slice_alias}
    holes = _cli(env, "llm", "--holes-of", str(human), "--config", "bm25", "--depth", "3",
                 "-o", str(tmp_path / "holes.csv"), "--endpoint", endpoint, "--json")
    assert holes.returncode == 0, holes.stderr
    graded = read_grades(tmp_path / "holes.csv")
    judged = {(r.split(",")[0], r.split(",")[1]) for r in human.read_text().splitlines()[1:]}
    assert graded and len(graded) <= 6
    assert not judged & {(g.query, g.doc_id) for g in graded}  # only the unjudged
    evaluated = subprocess.run(
        [sys.executable, "-m", "esrank.cli", "evaluate", "--judgments", str(human), "--config",
         "bm25", "--machine-grades", str(tmp_path / "holes.csv"), "--push", "--json"],
        env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    configs = json.loads(evaluated.stdout)["configs"]
    human_only, both = configs["bm25"]["mean"], configs["bm25 +machine"]["mean"]
    # every doc of the top 3 is judged once the machine grades fill the holes
    by_query = configs["bm25 +machine"]["per_query"]
    assert all(v["judged@10"] >= 0.3 for v in by_query.values())
    assert both["judged@10"] > human_only["judged@10"]
    # stored: the +machine figures as a configuration, each graded hole marked on its hit
    run_id = json.loads(evaluated.stdout)["run_id"]
    stored = engine.search(EVAL_QUERIES, {"size": 0, "query": {"term": {"run_id": run_id}},
                                          "aggs": {"c": {"terms": {"field": "config"}}}})
    assert {b["key"] for b in stored["aggregations"]["c"]["buckets"]} == {"bm25",
                                                                         "bm25 +machine"}
    marked = engine.search(EVAL_HITS, {"size": 100, "query": {"bool": {"filter": [
        {"term": {"run_id": run_id}}, {"term": {"config": "bm25"}},
        {"exists": {"field": "machine_grade"}}]}}})["hits"]["hits"]
    by_pair = {(g.query, g.doc_id): g for g in graded}
    assert marked and all(not h["_source"]["judged"] and h["_source"]["machine_grade"] ==
                          by_pair[h["_source"]["query"], h["_source"]["doc_id"]].grade
                          for h in marked)


def test_an_endpoint_that_is_down_fails_clearly_and_writes_nothing(engine, slice_alias,
                                                                    cli_env, tmp_path):
    doc = json.loads(SLICE.read_text().splitlines()[0])["id"]
    (tmp_path / "pairs.csv").write_text(f"query,docid,rating\nusb cable,{doc},3\n")
    out = tmp_path / "grades.csv"
    env = {**cli_env, "ESRANK_INDEX": slice_alias}
    run = _cli(env, "llm", str(tmp_path / "pairs.csv"), "-o", str(out), "--endpoint",
               "http://127.0.0.1:9/v1")
    assert run.returncode == 1
    assert "LLM endpoint http://127.0.0.1:9/v1/chat/completions unreachable" in run.stderr
    assert not out.exists()
    secret = {"ESRANK_LLM__ENDPOINT": "http://user:hunter2@127.0.0.1:9/v1"}
    run = _cli({**env, **secret}, "llm", str(tmp_path / "pairs.csv"), "-o", str(out))
    assert run.returncode == 1 and "hunter2" not in run.stdout + run.stderr
    assert "LLM endpoint http://user:***@127.0.0.1:9/v1/chat/completions unreachable" in run.stderr
    (tmp_path / "elsewhere.csv").write_text("query,docid,rating\nusb cable,no-such-doc,3\n")
    run = _cli(env, "llm", str(tmp_path / "elsewhere.csv"), "-o", str(out))
    assert run.returncode == 1
    assert f"none of the 1 products to judge is in index {slice_alias}" in run.stderr
    assert not out.exists()
