"""A cross-encoder's score as an LTR feature on the real plugin (feature_sets/chorus_ce.yaml):
the window's texts scored by the cross-encoder -> a `weights` param -> logged -> trained ->
parity gate -> served, and refused or degraded with the wrong cross-encoder or none."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest
from support.chorus_slice import SLICE, write_slice_judgments
from support.cleanup import remove_deployed
from support.cross_encoders import build_cross_encoder

from esrank.app import App
from esrank.catalogue.index import index_catalogue
from esrank.catalogue.lookup import fetch_texts
from esrank.catalogue.query import bm25_query
from esrank.core.errors import InputError, ModelError
from esrank.deploy import registry, upload
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import Judgment, JudgmentList, read_judgments
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import write_table
from esrank.learn.train import TrainParams, train
from esrank.models.cross_encoder import load_cross_encoder
from esrank.ranking.search import Ranker, run_of, search, search_many

ROOT = Path(__file__).resolve().parent.parent.parent
WINDOW = 20


@pytest.fixture(scope="module")
def ce_loop(engine, encoder, ce, tmp_path_factory):
    """Every doc of each slice query's window graded by its place in the cross-encoder's
    order (first: 3, next two: 2, next four: 1, the rest: 0), and a model trained on the
    cross_encoder feature alone (the others excluded). Log, train, deploy; clean up after."""
    tmp = tmp_path_factory.mktemp("ce-loop")
    run = uuid.uuid4().hex[:8]
    alias = f"test-ce-{run}"
    index_catalogue(engine, alias, [SLICE], encoder, progress=False)
    fs = dataclasses.replace(load_feature_set(ROOT / "feature_sets" / "chorus_ce.yaml"),
                             name=f"ce{run}")
    engine.ensure_store()
    engine.put_feature_set(fs)
    queries = sorted({j.query for j in read_judgments(write_slice_judgments(tmp / "j.csv"))})
    rows, relevance = [], {}
    for qid, query in enumerate(queries):
        hits = engine.search(alias, {"size": WINDOW, "query": bm25_query(query),
                                     "_source": False})["hits"]["hits"]
        ids = [h["_id"] for h in hits]
        if len(ids) < 8:
            continue
        texts = fetch_texts(engine, alias, ids)
        scores = ce.relevance(query, [texts[d] for d in ids])
        relevance[query] = dict(zip(ids, scores.tolist(), strict=True))
        place = np.argsort(np.argsort(-scores))
        grades = np.select([place == 0, place < 3, place < 7], [3, 2, 1], 0)
        rows += [Judgment(str(qid), query, d, int(g)) for d, g in zip(ids, grades, strict=True)]
    report = log_judgments(engine, alias, fs, JudgmentList(tuple(rows)), encoder,
                           window=WINDOW, first_pass=bm25_query, progress=False,
                           cross_encoder=ce)
    write_table(report.matrix, tmp / "table.parquet")
    train(report.matrix, tmp / "model", params=TrainParams(num_rounds=60), search=False,
          device="cpu", candidates=["window"],
          exclude=[n for n in fs.feature_names if n != "cross_encoder"])
    artifact = ModelArtifact.load(tmp / "model")
    deployed = upload.deploy(engine, alias, artifact, fs, report.matrix.docs_by_query(),
                               query_params(fs.params, encoder, cross_encoder=ce),
                               activate=False)
    model = registry.deployed_model(engine, fs.name, deployed.model)
    yield {"alias": alias, "fs": fs, "matrix": report.matrix, "relevance": relevance,
           "deployed": deployed, "ranker": Ranker(model.name, model, window=WINDOW),
           "artifact": artifact, "tmp": tmp}
    remove_deployed(engine, fs.name, engine.alias_targets(alias))


def test_the_logged_feature_is_the_cross_encoders_relevance(ce_loop, ce):
    m = ce_loop["matrix"]
    col = m.feature_names.index("cross_encoder")
    expected = [ce_loop["relevance"][q][d] for q, d in zip(m.queries, m.doc_ids, strict=True)]
    assert len(m) >= 100 and not np.isnan(m.values[:, col]).any()
    np.testing.assert_allclose(m.values[:, col], expected, atol=1e-6)
    assert m.cross_encoder == ce.key  # the table names the weights that filled it
    assert ce_loop["artifact"].meta["data"]["cross_encoder"] == ce.key


def test_parity_covers_the_feature(ce_loop):
    parity = ce_loop["deployed"].parity
    assert parity.passed, parity.to_dict()
    assert parity.docs == len(ce_loop["matrix"])
    assert ce_loop["ranker"].model.cross_encoder is not None


def test_the_served_model_ranks_by_the_cross_encoder(engine, ce_loop, ce, encoder):
    """Trained on that feature alone, the served top hit is the cross-encoder's favourite of
    the window: the scores reached the plugin at query time."""
    agree = 0
    for query, scores in ce_loop["relevance"].items():
        result = search(engine, ce_loop["alias"], query, ce_loop["ranker"], encoder,
                        size=WINDOW, features=True, reranker=ce)
        assert result.degraded is None and result.ranker == ce_loop["ranker"].name
        top = result.hits[0].doc_id
        agree += top == max(scores, key=scores.get)
        served = result.features[top]["cross_encoder"]
        assert served == pytest.approx(scores[top], abs=1e-6)
    assert agree >= 0.8 * len(ce_loop["relevance"])
    some = sorted(ce_loop["relevance"])[:5]
    many = search_many(engine, ce_loop["alias"], some, ce_loop["ranker"], encoder, size=WINDOW,
                       source=False, reranker=ce)
    for query in some:  # batched search ranks as single search does
        single = search(engine, ce_loop["alias"], query, ce_loop["ranker"], encoder,
                        size=WINDOW, reranker=ce)
        assert run_of(many)[query] == [h.doc_id for h in single.hits]


def test_another_or_no_cross_encoder_degrades_to_bm25(engine, ce_loop, encoder,
                                                      tmp_path_factory):
    other = load_cross_encoder(build_cross_encoder(tmp_path_factory.mktemp("other"), bias=2.0),
                               tmp_path_factory.mktemp("onnx-other"))
    query = next(iter(ce_loop["relevance"]))
    bm25 = search(engine, ce_loop["alias"], query, Ranker(window=WINDOW), size=10)
    for reranker, reason in ((other, f"the configured one is {other.key}"),
                             (None, "ESRANK_CROSS_ENCODER")):
        result = search(engine, ce_loop["alias"], query, ce_loop["ranker"], encoder,
                        reranker=reranker)
        assert result.ranker == "bm25"
        assert result.degraded.startswith("cross-encoder unavailable") and reason in \
            result.degraded
        assert [h.doc_id for h in result.hits] == [h.doc_id for h in bm25.hits]


def test_logging_without_a_cross_encoder_fails_before_any_request(engine, ce_loop, encoder):
    pair = JudgmentList((Judgment("1", "speaker", ce_loop["matrix"].doc_ids[0], 1),))
    with pytest.raises(InputError, match="ce_scores.*ESRANK_CROSS_ENCODER"):
        log_judgments(engine, ce_loop["alias"], ce_loop["fs"], pair, encoder, progress=False)


def test_deploy_refuses_a_table_logged_with_another_cross_encoder(
        engine, ce_loop, encoder, engine_settings_factory, tmp_path_factory):
    other = load_cross_encoder(build_cross_encoder(tmp_path_factory.mktemp("o"), bias=-1.0),
                               tmp_path_factory.mktemp("onnx-o"))
    app = App(engine_settings_factory(index=ce_loop["alias"]), engine=engine, encoder=encoder,
              reranker=other)
    before = engine.list_models(f"{ce_loop['fs'].name}-v")
    with pytest.raises(ModelError, match=f"logged with cross-encoder .*{other.key}"):
        upload.upload(app, ce_loop["tmp"] / "model", ROOT / "feature_sets" / "chorus_ce.yaml",
                      ce_loop["tmp"] / "table.parquet")
    assert engine.list_models(f"{ce_loop['fs'].name}-v") == before  # nothing uploaded

