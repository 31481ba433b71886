"""The recall stage on both engines: the kNN graph, the BM25 ∪ kNN candidates, a model logged,
trained, deployed and served over them, the fused baselines, and the requests shown to send."""

from __future__ import annotations

import numpy as np
import pytest
from support.chorus_slice import ROOT, SLICE, write_slice_judgments
from support.cleanup import remove_deployed
from support.loops import log_loop, private_feature_set

from esrank.catalogue.index import VECTOR_FIELD, has_graph
from esrank.catalogue.products import read_products, text_of, to_document
from esrank.catalogue.recall import Recall, retrieve
from esrank.judgments.lists import read_judgments
from esrank.learn.table import read_table
from esrank.ranking.fusion import fuse
from esrank.ranking.search import Ranker, search

RECALL = Recall(20, 15)
QUERIES = ["usb cable", "wireless mouse", "laptop bag", "bluetooth speaker", "printer ink"]


def exact_nearest(encoder, query: str, k: int) -> list[tuple[str, float]]:
    """The slice's k nearest products to `query` by exact cosine, scored (1 + cos) / 2."""
    docs = [to_document(p) for p in read_products([SLICE])]
    ids = [d for d, _ in docs]
    vectors = encoder.encode([text_of(doc) for _, doc in docs])
    cos = vectors @ encoder.encode([query])[0]
    return [(ids[i], (1 + float(cos[i])) / 2) for i in np.argsort(-cos)[:k]]


def test_the_slice_carries_the_graph_and_knn_finds_the_nearest(engine, encoder, slice_alias):
    assert all(has_graph(m) for m in engine.mapping(slice_alias).values())
    [found] = retrieve(engine, slice_alias, ["usb cable"], Recall(0, 10),
                       encoder.encode(["usb cable"]))
    exact = exact_nearest(encoder, "usb cable", 10)
    assert not found.bm25
    # HNSW over 301 docs: the same nearest products, scored (1 + cos) / 2 on both engines
    assert len({d for d, _ in found.knn} & {d for d, _ in exact}) >= 9
    scores = dict(exact_nearest(encoder, "usb cable", 301))
    assert all(abs(score - scores[d]) < 1e-4 for d, score in found.knn)


def test_candidates_are_the_bm25_window_joined_with_the_nearest(engine, encoder, slice_alias):
    found = retrieve(engine, slice_alias, QUERIES, RECALL, encoder.encode(QUERIES))
    for query, c in zip(QUERIES, found, strict=True):
        bm25 = [h.doc_id for h in search(engine, slice_alias, query, Ranker("bm25"),
                                         size=RECALL.bm25).hits]
        assert [d for d, _ in c.bm25] == bm25
        assert len(c.knn) == RECALL.knn
        assert c.ids[:len(bm25)] == bm25 and set(c.ids) == set(bm25) | {d for d, _ in c.knn}
        ranks = c.ranks()
        assert all(ranks[d][0] == r for r, d in enumerate(bm25, 1))
        assert all(ranks[d][1] == r for r, (d, _) in enumerate(c.knn, 1))


@pytest.fixture(scope="module")
def recall_loop(engine, encoder, slice_alias, tmp_path_factory):
    """The chorus feature set logged over RECALL on the slice, trained and deployed."""
    tmp = tmp_path_factory.mktemp("recall")
    judged = read_judgments(write_slice_judgments(tmp / "j.csv"))
    fs = private_feature_set(ROOT / "feature_sets" / "chorus.yaml", "recall")
    chain = log_loop(engine, encoder, slice_alias, fs, judged, tmp, recall=RECALL)
    chain = chain.trained(tmp / "model", exclude=["recency"]).with_deploy(engine)
    yield chain
    remove_deployed(engine, fs.name)


def test_the_table_records_each_candidate_s_lists(recall_loop):
    m = recall_loop.table
    assert m.recall == RECALL and recall_loop.artifact.meta["data"]["recall"] == RECALL.to_dict()
    served = [i for i in range(len(m)) if m.ranks[i] > 0]
    assert all(m.lists[i] != (0, 0) for i in served)
    knn_only = [i for i in served if m.lists[i][0] == 0]
    assert knn_only
    for qid in {m.qids[i] for i in knn_only}:  # a query's BM25 docs first, then the others
        rows = [i for i in served if m.qids[i] == qid]
        assert (max([m.ranks[i] for i in rows if m.lists[i][0]], default=0)
                < min(m.ranks[i] for i in rows if not m.lists[i][0]))
    assert all(m.lists[i] == (0, 0) for i in range(len(m)) if m.ranks[i] == 0)


def test_a_model_trained_over_the_recall_stage_rescores_all_of_it(engine, encoder,
                                                                 recall_loop):
    from esrank.deploy.registry import active_model

    assert recall_loop.deployed.parity.passed
    model = active_model(engine, recall_loop.feature_set.name)
    assert model.recall == RECALL
    ranker = Ranker(model.name, model, RECALL.bm25, knn=model.recall.knn)
    for query in QUERIES[:3]:
        [c] = retrieve(engine, recall_loop.alias, [query], RECALL, encoder.encode([query]))
        result = search(engine, recall_loop.alias, query, ranker, encoder, size=len(c.ids),
                        features=True, requests=True)
        assert result.degraded is None and result.ranker == model.name
        assert sorted(h.doc_id for h in result.hits) == sorted(c.ids)  # the whole union
        assert set(result.features) == set(c.ids)
        # what an application sends itself serves the same ranking
        recall_step, rank_step = result.requests
        assert recall_step["step"] == "recall" and rank_step["step"] == "rank"
        assert VECTOR_FIELD in str(recall_step["searches"][1]["query"])
        rescore = rank_step["body"]["rescore"]["query"]["rescore_query"]["sltr"]
        assert rescore["model"] == model.name and "query_vector" in rescore["params"]
        [answer] = engine.msearch(recall_loop.alias, [rank_step["body"]])
        assert [h["_id"] for h in answer["hits"]["hits"]] == [h.doc_id for h in result.hits]


def test_the_recall_stage_degrades_to_bm25_when_the_encoder_fails(engine, encoder, recall_loop):
    from esrank.deploy.registry import active_model

    class Broken:
        key, name, dims = encoder.key, encoder.name, encoder.dims

        def encode(self, texts):
            raise TimeoutError("encoder overloaded")

    model = active_model(engine, recall_loop.feature_set.name)
    ranker = Ranker(model.name, model, RECALL.bm25, knn=RECALL.knn)
    result = search(engine, recall_loop.alias, "usb cable", ranker, Broken(), size=5)
    bm25 = search(engine, recall_loop.alias, "usb cable", Ranker("bm25"), size=5)
    assert result.ranker == "bm25" and "encoder unavailable" in result.degraded
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in bm25.hits]


@pytest.mark.parametrize("kind", ["knn", "rrf", "linear"])
def test_fused_baselines_rank_the_two_lists(engine, encoder, slice_alias, kind):
    ranker = Ranker(kind, None, RECALL.bm25, knn=RECALL.knn, weight=0.3)
    result = search(engine, slice_alias, "wireless mouse", ranker, encoder, size=10,
                    requests=True)
    [c] = retrieve(engine, slice_alias, ["wireless mouse"], ranker.recall,
                   encoder.encode(["wireless mouse"]))
    assert [h.doc_id for h in result.hits] == [d for d, _ in fuse(kind, c, 0.3)][:10]
    assert all(h.title for h in result.hits)
    assert result.requests[-1]["step"] == "fuse"


def test_a_narrowed_table_is_the_table_logged_over_the_narrower_set(recall_loop, loop):
    narrow = recall_loop.table.narrowed(Recall(loop.table.recall.bm25))
    assert narrow.recall == loop.table.recall

    def rows(m):
        return {(m.qids[i], m.doc_ids[i]): (m.ranks[i], m.judged[i], m.grades[i])
                for i in range(len(m))}

    assert rows(narrow) == rows(loop.table)
    names = list(loop.table.feature_names)
    same = [names.index(n) for n in names if n != "recency"]
    at = {(narrow.qids[i], narrow.doc_ids[i]): i for i in range(len(narrow))}
    for i in range(len(loop.table)):
        j = at[(loop.table.qids[i], loop.table.doc_ids[i])]
        assert np.allclose(loop.table.values[i, same], narrow.values[j, same], equal_nan=True)


def test_the_cli_logs_the_recall_stage_and_shows_the_requests(engine, cli_env, slice_alias,
                                                              tmp_path):
    import json
    import subprocess
    import sys

    judged = write_slice_judgments(tmp_path / "j.csv")
    env = {**cli_env, "ESRANK_INDEX": slice_alias}

    def esrank(*args):
        run = subprocess.run([sys.executable, "-m", "esrank.cli", *args, "--json"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout)

    logged = esrank("log", str(judged), "-o", str(tmp_path / "t.parquet"), "--window", "20",
                    "--knn", "15")
    assert logged["candidates"] == "bm25@20+knn@15" and logged["rows"] > 0
    assert read_table(tmp_path / "t.parquet").recall == Recall(20, 15)
    shown = esrank("search", "usb cable", "--model", "linear", "--show-requests")
    assert [r["step"] for r in shown["requests"]] == ["recall", "fuse"]
    assert shown["ranker"] == "linear" and shown["hits"]
