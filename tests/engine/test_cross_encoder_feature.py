"""A cross-encoder's score as an LTR feature on the real plugin (feature_sets/chorus_ce.yaml):
the window's texts scored by the cross-encoder -> a `weights` param -> logged -> trained ->
parity gate -> served, and refused or degraded with the wrong cross-encoder or none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.chorus_slice import write_slice_judgments
from support.cleanup import remove_deployed
from support.cross_encoders import build_cross_encoder
from support.loops import WINDOW, Loop, log_loop, private_feature_set

from esrank.app import App
from esrank.catalogue.lookup import fetch_texts
from esrank.catalogue.query import bm25_query
from esrank.core.errors import InputError, ModelError
from esrank.deploy import registry, upload
from esrank.judgments.lists import Judgment, JudgmentList, read_judgments
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import TrainParams
from esrank.models.cross_encoder import load_cross_encoder
from esrank.ranking.search import Ranker, run_of, search, search_many

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def relevance(engine, ce, slice_alias, tmp_path_factory) -> dict[str, dict[str, float]]:
    """Query -> the cross-encoder's relevance of each doc of its BM25 window, for the slice's
    judged queries whose window holds 8 docs or more."""
    judged = read_judgments(write_slice_judgments(tmp_path_factory.mktemp("ce") / "j.csv"))
    out = {}
    for query in sorted({j.query for j in judged}):
        hits = engine.search(slice_alias, {"size": WINDOW, "query": bm25_query(query),
                                           "_source": False})["hits"]["hits"]
        ids = [h["_id"] for h in hits]
        if len(ids) < 8:
            continue
        texts = fetch_texts(engine, slice_alias, ids)
        scores = ce.relevance(query, [texts[d] for d in ids])
        out[query] = dict(zip(ids, scores.tolist(), strict=True))
    return out


@pytest.fixture(scope="module")
def ce_loop(engine, encoder, ce, slice_alias, relevance, tmp_path_factory) -> Loop:
    """Every doc of each query's window graded by its place in the cross-encoder's order
    (first: 3, next two: 2, next four: 1, the rest: 0), and a model trained on the
    cross_encoder feature alone (the others excluded). Log, train, deploy (not activated);
    clean up after."""
    tmp = tmp_path_factory.mktemp("ce-loop")
    fs = private_feature_set(ROOT / "feature_sets" / "chorus_ce.yaml", "ce")
    rows = []
    for qid, (query, scores) in enumerate(relevance.items()):
        place = np.argsort(np.argsort(-np.array(list(scores.values()))))
        grades = np.select([place == 0, place < 3, place < 7], [3, 2, 1], 0)
        rows += [Judgment(str(qid), query, d, int(g))
                 for d, g in zip(scores, grades, strict=True)]
    chain = log_loop(engine, encoder, slice_alias, fs, JudgmentList(tuple(rows)), tmp,
                     cross_encoder=ce)
    chain = chain.trained(tmp / "model", params=TrainParams(num_rounds=60), device="cpu",
                          candidates=["window"],
                          exclude=[n for n in fs.feature_names if n != "cross_encoder"])
    yield chain.with_deploy(engine, activate=False)
    remove_deployed(engine, fs.name)


@pytest.fixture(scope="module")
def ranker(engine, ce_loop) -> Ranker:
    """The deployed model of ce_loop, rescoring the window."""
    model = registry.deployed_model(engine, ce_loop.feature_set.name, ce_loop.deployed.model)
    return Ranker(model.name, model, window=WINDOW)


def test_the_logged_feature_is_the_cross_encoders_relevance(ce_loop, relevance, ce):
    m = ce_loop.table
    col = m.feature_names.index("cross_encoder")
    expected = [relevance[q][d] for q, d in zip(m.queries, m.doc_ids, strict=True)]
    assert len(m) >= 100 and not np.isnan(m.values[:, col]).any()
    np.testing.assert_allclose(m.values[:, col], expected, atol=1e-6)
    assert m.cross_encoder == ce.key  # the table names the weights that filled it
    assert ce_loop.artifact.meta["data"]["cross_encoder"] == ce.key


def test_parity_covers_the_feature(ce_loop, ranker):
    parity = ce_loop.deployed.parity
    assert parity.passed, parity.to_dict()
    assert parity.docs == len(ce_loop.table)
    assert ranker.model.cross_encoder is not None


def test_the_served_model_ranks_by_the_cross_encoder(engine, ce_loop, relevance, ranker, ce,
                                                     encoder):
    """Trained on that feature alone, the served top hit is the cross-encoder's favourite of
    the window: the scores reached the plugin at query time."""
    agree = 0
    for query, scores in relevance.items():
        result = search(engine, ce_loop.alias, query, ranker, encoder,
                        size=WINDOW, features=True, reranker=ce)
        assert result.degraded is None and result.ranker == ranker.name
        top = result.hits[0].doc_id
        agree += top == max(scores, key=scores.get)
        served = result.features[top]["cross_encoder"]
        assert served == pytest.approx(scores[top], abs=1e-6)
    assert agree >= 0.8 * len(relevance)
    some = sorted(relevance)[:5]
    many = search_many(engine, ce_loop.alias, some, ranker, encoder, size=WINDOW,
                       source=False, reranker=ce)
    for query in some:  # batched search ranks as single search does
        single = search(engine, ce_loop.alias, query, ranker, encoder,
                        size=WINDOW, reranker=ce)
        assert run_of(many)[query] == [h.doc_id for h in single.hits]


def test_another_or_no_cross_encoder_degrades_to_bm25(engine, ce_loop, relevance, ranker,
                                                      encoder, tmp_path_factory):
    other = load_cross_encoder(build_cross_encoder(tmp_path_factory.mktemp("other"), bias=2.0),
                               tmp_path_factory.mktemp("onnx-other"))
    query = next(iter(relevance))
    bm25 = search(engine, ce_loop.alias, query, Ranker(window=WINDOW), size=10)
    for reranker, reason in ((other, f"the configured one is {other.key}"),
                             (None, "ESRANK_CROSS_ENCODER")):
        result = search(engine, ce_loop.alias, query, ranker, encoder,
                        reranker=reranker)
        assert result.ranker == "bm25"
        assert result.degraded.startswith("cross-encoder unavailable") and reason in \
            result.degraded
        assert [h.doc_id for h in result.hits] == [h.doc_id for h in bm25.hits]


def test_logging_without_a_cross_encoder_fails_before_any_request(engine, ce_loop, encoder):
    pair = JudgmentList((Judgment("1", "speaker", ce_loop.table.doc_ids[0], 1),))
    with pytest.raises(InputError, match="ce_scores.*ESRANK_CROSS_ENCODER"):
        log_judgments(engine, ce_loop.alias, ce_loop.feature_set, pair, encoder, progress=False)


def test_deploy_refuses_a_table_logged_with_another_cross_encoder(
        engine, ce_loop, encoder, engine_settings_factory, tmp_path_factory):
    other = load_cross_encoder(build_cross_encoder(tmp_path_factory.mktemp("o"), bias=-1.0),
                               tmp_path_factory.mktemp("onnx-o"))
    app = App(engine_settings_factory(index=ce_loop.alias), engine=engine, encoder=encoder,
              reranker=other)
    before = engine.list_models(f"{ce_loop.feature_set.name}-v")
    with pytest.raises(ModelError, match=f"logged with cross-encoder .*{other.key}"):
        upload.upload(app, ce_loop.artifact.path, ROOT / "feature_sets" / "chorus_ce.yaml",
                      ce_loop.table_path)
    assert engine.list_models(f"{ce_loop.feature_set.name}-v") == before  # nothing uploaded

