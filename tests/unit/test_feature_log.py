"""Feature logging logic over a faked msearch answer (the real plugin: tests/engine)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support.fakes import FakeTransport, searches

from esrank.catalogue.recall import Recall
from esrank.core.errors import ConfigError, EngineError, InputError
from esrank.engine.base import Engine
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import Judgment, JudgmentList
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import FeatureMatrix, write_ranklib

ROOT = Path(__file__).resolve().parent.parent.parent
FS = load_feature_set(ROOT / "feature_sets" / "chorus.yaml")


class FakeEncoder:
    name, dims, max_tokens, key = "fake", 384, 8, "fake:00aa11bb22cc33dd:fp32"

    def encode(self, texts, batch_size=64):
        return np.full((len(texts), 384), 0.5, dtype=np.float32)


def logging_answers(present):
    """_msearch answers to logging searches: the requested ids that exist, feature i = i."""

    def answer(body):
        responses = []
        for search in searches(body):
            ids = search["query"]["bool"]["filter"][0]["ids"]["values"]
            assert search["rescore"]["window_size"] == len(ids)
            assert search["ext"]["ltr_log"]["log_specs"]["rescore_index"] == 0
            sltr = search["rescore"]["query"]["rescore_query"]["sltr"]
            assert sltr["featureset"] == FS.engine_name
            assert sltr["params"]["keywords"] and len(sltr["params"]["query_vector"]) == 384
            hits = [{"_id": d, "fields": {"_ltrlog": [{"esrank": [
                ({"name": n, "value": float(i)} if n != "price" else {"name": n})
                for i, n in enumerate(FS.feature_names)]}]}} for d in ids if d in present]
            responses.append({"hits": {"hits": hits}})
        return {"responses": responses}

    return FakeTransport({("POST", "/_msearch"): answer,
                          **{("GET", f"/{index}/_mapping"): mapping_of(FakeEncoder.key)
                             for index in ("products", "p")}})


def mapping_of(encoder_key: str) -> dict:
    """A GET _mapping answer of an index esrank built with that encoder."""
    return {"products-1": {"mappings": {"_meta": {"esrank_encoder": encoder_key}}}}


def test_batched_logging_keeps_order_nan_and_reports_missing_docs():
    jl = JudgmentList(tuple(Judgment(str(q), f"query {q}", f"d{q}{k}", k % 4)
                            for q in range(5) for k in range(3)))
    present = {j.doc_id for j in jl} - {"d21"}
    transport = logging_answers(present)
    report = log_judgments(Engine(transport), "products", FS, jl, FakeEncoder(),
                           queries_per_request=2, progress=False)
    assert [c[1] for c in transport.calls] == ["/products/_mapping"] + ["/_msearch"] * 3
    m = report.matrix
    assert m.feature_names == FS.feature_names and m.feature_set == FS.engine_name
    assert len(m) == 14 and m.values.shape == (14, len(FS.feature_names))
    assert report.missing_docs == [("query 2", "d21")]
    price = FS.feature_names.index("price")
    assert np.isnan(m.values[:, price]).all()
    assert m.values[0, 1] == 1.0 and m.grades[:3] == (0, 1, 2)


def test_ranklib_leaves_missing_features_out(tmp_path):
    jl = JudgmentList((Judgment("1", "tv", "a", 2),))
    report = log_judgments(Engine(logging_answers({"a"})), "p", FS, jl, FakeEncoder(),
                           progress=False)
    out = tmp_path / "train.txt"
    write_ranklib(report.matrix, out)
    lines = out.read_text().splitlines()
    assert lines[0] == f"# feature_set: {FS.engine_name}"
    row = lines[-1]
    price_col = FS.feature_names.index("price") + 1
    assert row.startswith("2 qid:1 1:0 2:1 ") and f" {price_col}:" not in row
    assert row.endswith("# a tv")
    assert not math.isnan(report.matrix.values[0, 0])


def test_an_index_embedded_by_other_weights_is_refused_before_any_search():
    jl = JudgmentList((Judgment("1", "tv", "a", 2),))
    transport = logging_answers({"a"})
    transport.answers[("GET", "/products/_mapping")] = mapping_of("tuned:99ee88ff77aa66bb:int8")
    with pytest.raises(ConfigError, match="index 'products' was embedded by encoder "
                                          "tuned:99ee88ff77aa66bb:int8; the configured "
                                          "encoder is fake:00aa11bb22cc33dd:fp32"):
        log_judgments(Engine(transport), "products", FS, jl, FakeEncoder(), progress=False)
    assert [c[1] for c in transport.calls] == ["/products/_mapping"]
    transport.answers[("GET", "/products/_mapping")] = mapping_of("fake:00aa11bb22cc33dd:int8")
    report = log_judgments(Engine(transport), "products", FS, jl, FakeEncoder(), progress=False)
    assert report.matrix.encoder == FakeEncoder.key  # int8 documents: the same weights


def test_vector_params_need_a_matching_encoder():
    with pytest.raises(InputError, match="needs a query encoder"):
        query_params(FS.params, None)

    class Small(FakeEncoder):
        dims = 8

    with pytest.raises(InputError, match="384 dims, the encoder makes 8"):
        query_params(FS.params, Small())


CE_FS = load_feature_set(ROOT / "feature_sets" / "chorus_ce.yaml")


class FakeCrossEncoder:
    key = "fake@000000000000"

    def relevance(self, query, docs):
        return np.array([len(d) / 100 for d in docs], dtype=np.float32)


def test_cross_encoder_params_score_each_querys_docs():
    build = query_params(CE_FS.params, FakeEncoder(), cross_encoder=FakeCrossEncoder())
    assert build.needs_docs and not query_params(FS.params, FakeEncoder()).needs_docs
    first, empty = build(["tv", "radio"], [{"a": "x" * 10, "b": "x" * 50}, {}])
    assert first["keywords"] == "tv" and len(first["query_vector"]) == 384
    assert first["ce_scores"] == [{"term": "a", "weight": pytest.approx(0.1)},
                                  {"term": "b", "weight": pytest.approx(0.5)}]
    assert empty["ce_scores"] == []  # no doc scored: the feature is missing for every doc
    with pytest.raises(ValueError, match="doc texts"):
        build(["tv"])
    with pytest.raises(InputError, match="'ce_scores' is filled by a cross-encoder"):
        query_params(CE_FS.params, FakeEncoder())


def test_parquet_table_round_trip_keeps_nan_order_and_feature_set(tmp_path):
    from esrank.learn.table import read_table, write_table

    jl = JudgmentList(tuple(Judgment("1", "tv", d, g) for d, g in (("a", 3), ("b", 0))))
    m = log_judgments(Engine(logging_answers({"a", "b"})), "p", FS, jl, FakeEncoder(),
                      progress=False).matrix
    path = tmp_path / "train.parquet"
    write_table(m, path, judgments_source="j.csv")
    back = read_table(path)
    assert back.feature_set == m.feature_set and back.feature_names == m.feature_names
    assert (back.qids, back.doc_ids, back.grades) == (m.qids, m.doc_ids, m.grades)
    np.testing.assert_array_equal(back.values, m.values)  # NaN == NaN here
    assert np.isnan(back.values[:, FS.feature_names.index("price")]).all()


def test_a_foreign_parquet_file_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from esrank.learn.table import read_table

    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(InputError, match="not an esrank training table"):
        read_table(tmp_path / "other.parquet")


def test_a_long_judged_query_is_logged_with_the_terms_search_sends():
    from esrank.core.query_text import MAX_QUERY_TERMS

    words = [f"w{i}" for i in range(100)]
    jl = JudgmentList((Judgment("1", " ".join(words), "a", 2),))
    transport = logging_answers({"a"})
    report = log_judgments(Engine(transport), "p", FS, jl, FakeEncoder(), progress=False)
    [sltr] = [s["rescore"]["query"]["rescore_query"]["sltr"]
              for _, path, body, _ in transport.calls if path == "/_msearch"
              for s in searches(body)]
    assert sltr["params"]["keywords"] == " ".join(words[:MAX_QUERY_TERMS])
    assert report.matrix.queries == (" ".join(words),)  # the table keeps the judged text


def test_a_table_narrows_to_a_smaller_candidate_set():
    # one query: a, b from BM25 (b also 1st by kNN), c kNN-only 2nd, d judged outside, e kNN 3rd
    m = FeatureMatrix("s@0", ("f",), ("q",) * 5, ("x",) * 5, ("a", "b", "c", "d", "e"),
                      (2, 1, 0, 3, 0), np.arange(5, dtype=np.float32).reshape(5, 1),
                      (1, 2, 3, 0, 4), (True, True, False, True, False), recall=Recall(2, 3),
                      lists=((1, 0), (2, 1), (0, 2), (0, 0), (0, 3)))
    bm25 = m.narrowed(Recall(1))
    assert bm25.doc_ids == ("a", "b", "d") and bm25.ranks == (1, 0, 0)
    assert bm25.lists == ((1, 0), (0, 0), (0, 0)) and bm25.recall == Recall(1)
    two = m.narrowed(Recall(1, 2))
    assert two.doc_ids == ("a", "b", "c", "d") and two.ranks == (1, 2, 3, 0)
    assert two.values[:, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="not within"):
        m.narrowed(Recall(3, 0))


def test_a_dataset_of_parts_reads_back_as_one_table(tmp_path):
    from dataclasses import replace

    from support.tables import synthetic

    from esrank.learn.table import read_table, table_parts, write_part

    m = synthetic(queries=6, docs=4)
    first, second = m.take(range(12)), m.take(range(12, 24))
    write_part(second, tmp_path / "ds", 1)
    write_part(first, tmp_path / "ds", 0)
    assert [p.name for p in table_parts(tmp_path / "ds")] == ["part-00000.parquet",
                                                             "part-00001.parquet"]
    back = read_table(tmp_path / "ds")
    assert back.qids == m.qids and back.doc_ids == m.doc_ids
    np.testing.assert_array_equal(back.values, m.values)
    write_part(replace(first, feature_set="other@0"), tmp_path / "ds", 2)
    with pytest.raises(InputError, match="part-00002.*other@0"):
        read_table(tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no part"):
        read_table(tmp_path / "empty")


def judged(queries: int, docs: int = 3) -> JudgmentList:
    return JudgmentList(tuple(Judgment(str(q), f"query {q}", f"d{q}-{k}", k % 4)
                              for q in range(queries) for k in range(docs)))


def slow_first_answers(present):
    """logging_answers whose earlier queries answer later (so batches finish out of order);
    `.peak` is the most msearches in flight at once."""
    import threading
    import time

    transport = logging_answers(present)
    answer, lock, flight = transport.answers[("POST", "/_msearch")], threading.Lock(), [0]
    transport.peak = 0

    def slow(body):
        first = int(searches(body)[0]["query"]["bool"]["filter"][0]["ids"]["values"][0][1:]
                    .split("-")[0])
        with lock:
            flight[0] += 1
            transport.peak = max(transport.peak, flight[0])
        time.sleep(0.01 * (8 - first))
        with lock:
            flight[0] -= 1
        return answer(body)

    transport.answers[("POST", "/_msearch")] = slow
    return transport


def test_concurrent_workers_log_the_same_table_in_the_same_order():
    jl = judged(8)
    present = {j.doc_id for j in jl} - {"d5-1"}
    one = log_judgments(Engine(logging_answers(present)), "p", FS, jl, FakeEncoder(),
                        queries_per_request=1, progress=False)
    transport = slow_first_answers(present)
    four = log_judgments(Engine(transport), "p", FS, jl, FakeEncoder(), queries_per_request=1,
                         workers=4, progress=False)
    assert transport.peak > 1  # the batches did overlap, and finished out of order
    assert four.matrix.qids == one.matrix.qids and four.matrix.doc_ids == one.matrix.doc_ids
    np.testing.assert_array_equal(four.matrix.values, one.matrix.values)
    assert four.missing_docs == one.missing_docs == [("query 5", "d5-1")]


def test_the_worker_pool_keeps_order_and_stops_at_the_first_error():
    import time

    from esrank.learn.feature_log import in_order

    started = []

    def work(n):
        started.append(n)
        time.sleep(0.01 * (5 - n % 5))
        if n == 3:
            raise EngineError("msearch", "node left")
        return n * 10

    assert list(in_order(work, range(3), workers=3)) == [0, 10, 20]
    started.clear()
    results = in_order(work, range(100), workers=2)
    assert [next(results) for _ in range(3)] == [0, 10, 20]
    with pytest.raises(EngineError, match="node left"):
        next(results)
    assert len(started) < 10  # at most two per worker were queued, the rest never started


def test_a_dataset_is_written_in_parts_of_whole_query_groups_and_resumes(tmp_path):
    from esrank.learn.feature_log import log_dataset
    from esrank.learn.table import read_table, table_parts

    jl = judged(5)
    present = {j.doc_id for j in jl} - {"d3-2"}
    whole = log_judgments(Engine(logging_answers(present)), "p", FS, jl, FakeEncoder(),
                          progress=False).matrix
    folder = tmp_path / "table"
    transport = logging_answers(present)
    first = log_dataset(Engine(transport), "p", FS, jl, FakeEncoder(), folder, part_size=2,
                        queries_per_request=1, workers=2, progress=False)
    assert (first.written, first.skipped, first.rows, first.judgments) == (3, 0, 14, 15)
    assert first.missing_docs == [("query 3", "d3-2")]
    parts = table_parts(folder)
    assert [read_table(p).qids[::3] for p in parts] == [("0", "1"), ("2", "3"), ("4",)]
    back = read_table(folder)
    assert (back.qids, back.doc_ids) == (whole.qids, whole.doc_ids)
    np.testing.assert_array_equal(back.values, whole.values)

    parts[1].unlink()
    transport.calls.clear()
    again = log_dataset(Engine(transport), "p", FS, jl, FakeEncoder(), folder, part_size=2,
                        queries_per_request=1, progress=False)
    assert (again.written, again.skipped, again.rows, again.judgments) == (1, 2, 14, 6)
    assert again.missing_docs == first.missing_docs  # the skipped parts' too, from the manifest
    logged = {s["query"]["bool"]["filter"][0]["ids"]["values"][0]
              for _, path, body, _ in transport.calls if path == "/_msearch"
              for s in searches(body)}
    assert logged == {"d2-0", "d3-0"}  # part 1's queries only
    np.testing.assert_array_equal(read_table(folder).values, whole.values)


def test_a_run_that_fails_midway_keeps_its_finished_parts(tmp_path):
    from esrank.learn.feature_log import log_dataset
    from esrank.learn.table import table_parts

    jl = judged(6)
    transport = logging_answers({j.doc_id for j in jl})
    answer, calls = transport.answers[("POST", "/_msearch")], []

    def failing(body):
        calls.append(body)
        if len(calls) == 4:
            raise EngineError("msearch", "cannot reach the node")
        return answer(body)

    transport.answers[("POST", "/_msearch")] = failing
    with pytest.raises(EngineError, match="cannot reach"):
        log_dataset(Engine(transport), "p", FS, jl, FakeEncoder(), tmp_path, part_size=2,
                    queries_per_request=1, progress=False)
    assert [p.name for p in table_parts(tmp_path)] == ["part-00000.parquet"]
    transport.answers[("POST", "/_msearch")] = answer
    done = log_dataset(Engine(transport), "p", FS, jl, FakeEncoder(), tmp_path, part_size=2,
                       queries_per_request=1, progress=False)
    assert (done.written, done.skipped, done.judgments) == (2, 1, 12)


def test_a_folder_logged_with_other_inputs_is_refused_naming_what_differs(tmp_path):
    from dataclasses import replace

    from esrank.learn.log_manifest import LogManifest, judgments_digest

    logged = LogManifest("chorus@1", "bm25@100+knn@200", judgments_digest(judged(2)),
                         "enc:1:fp32", None, 500, "j.csv")
    assert logged.open(tmp_path) == {}
    assert replace(logged, judgments="elsewhere.csv").open(tmp_path) == {}  # same digest
    with pytest.raises(InputError, match=r"another candidate set \(bm25@100\+knn@200 there, "
                                         r"bm25@20 now\): log into a new folder"):
        replace(logged, candidates="bm25@20").open(tmp_path)
    with pytest.raises(InputError, match=r"another judgments .*; another part size \(500 there,"
                                         r" 100 now\)"):
        replace(logged, judgments_sha256=judgments_digest(judged(3)), part_size=100
                ).open(tmp_path)
    with pytest.raises(InputError, match=r"another feature set \(chorus@1 there, chorus@2"):
        replace(logged, feature_set="chorus@2").open(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="part files but no _esrank.json"):
        logged.open(tmp_path / "other")


def test_each_query_is_embedded_alone_whatever_its_batch():
    class BatchDependent(FakeEncoder):  # as an int8 encoder: the batch changes each vector
        def encode(self, texts, batch_size=64):
            return np.full((len(texts), 384), 1 / len(texts), dtype=np.float32)

    transport = logging_answers({"d0-0"})
    log_judgments(Engine(transport), "p", FS, judged(5), BatchDependent(),
                  queries_per_request=4, progress=False)
    sent = [s["rescore"]["query"]["rescore_query"]["sltr"]["params"]["query_vector"][0]
            for _, path, body, _ in transport.calls if path == "/_msearch"
            for s in searches(body)]
    assert sent == [1.0] * 5
