"""A model's cosine features are only as good as the encoder pair behind them: the index's
documents and the query must be embedded by the same weights. esrank records the encoder with
the index, the logged table, the artifact and the registry, and refuses (logging, deploy) or
degrades (search) when the configured encoder has other weights."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from support.chorus_slice import SLICE, write_slice_judgments
from support.cleanup import remove_deployed
from support.cross_encoders import build_encoder_version
from support.loops import Loop, log_loop

from esrank.app import App
from esrank.catalogue.index import index_catalogue, index_encoder
from esrank.catalogue.recall import Recall
from esrank.core.errors import ConfigError, ModelError
from esrank.deploy.registry import active_model, entry
from esrank.deploy.reindex import index
from esrank.deploy.upload import upload
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_judgments
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import read_table
from esrank.learn.train import TrainParams
from esrank.models.encoder import load_encoder
from esrank.ranking.search import Ranker, search

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def fs_file(tmp_path_factory) -> Path:
    """feature_sets/chorus.yaml under a private name, as a file (App.deploy reads one)."""
    path = tmp_path_factory.mktemp("fs") / "fs.yaml"
    path.write_text((ROOT / "feature_sets" / "chorus.yaml").read_text()
                    .replace("name: chorus\n", f"name: enc{uuid.uuid4().hex[:8]}\n", 1))
    return path


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another version of the encoder: the packaged MiniLM with other weights."""
    return load_encoder(str(build_encoder_version(tmp_path_factory.mktemp("enc2"))),
                        backend="numpy")


@pytest.fixture(scope="module")
def versions(engine, encoder, fs_file, tmp_path_factory) -> Loop:
    """The slice indexed by the packaged encoder under an alias of the module's own (the last
    test re-embeds it), its judgments logged and a model trained on them."""
    tmp = tmp_path_factory.mktemp("encoder-versions")
    alias = f"test-enc-{uuid.uuid4().hex[:8]}"
    index_catalogue(engine, alias, [SLICE], encoder, progress=False)
    judgments = read_judgments(write_slice_judgments(tmp / "judgments.csv"))
    fs = load_feature_set(fs_file)
    chain = log_loop(engine, encoder, alias, fs, judgments, tmp)
    yield chain.trained(tmp / "model", params=TrainParams(num_rounds=20), device="cpu",
                        candidates=["window"])
    remove_deployed(engine, fs.name, engine.alias_targets(alias))


def test_the_index_and_the_table_name_the_encoder(versions, engine, encoder):
    assert index_encoder(engine, versions.alias) == encoder.key
    assert read_table(versions.table_path).encoder == encoder.key


def test_logging_with_other_weights_is_refused_naming_both(versions, engine, encoder, other):
    with pytest.raises(ConfigError) as err:
        log_judgments(engine, versions.alias, versions.feature_set, versions.judged, other,
                      recall=Recall(20), progress=False)
    assert encoder.key in str(err.value) and other.key in str(err.value)
    assert "esrank index" in str(err.value)


def test_deploy_refuses_another_encoder_and_serving_degrades_with_one(
        versions, engine, encoder, engine_settings, fs_file, other):
    settings = engine_settings(index=versions.alias)
    fs_name = versions.feature_set.name
    model_dir, table = versions.artifact.path, versions.table_path
    with pytest.raises(ModelError, match="logged with encoder .* the model would be served "
                                         "other cosines"):
        upload(App(settings, engine=engine, encoder=other), model_dir, fs_file, table)
    assert not entry(engine, fs_name).models  # nothing uploaded, nothing live

    upload(App(settings, engine=engine, encoder=encoder), model_dir, fs_file, table)
    model = active_model(engine, fs_name)
    assert model.encoder == encoder.key
    ranker = Ranker(model.name, model, window=20)
    served = search(engine, versions.alias, "bluetooth speaker", ranker, encoder)
    assert served.degraded is None and served.ranker == model.name
    degraded = search(engine, versions.alias, "bluetooth speaker", ranker, other)
    assert degraded.ranker == "bm25"
    assert f"learned from encoder {encoder.key}" in degraded.degraded
    bm25 = search(engine, versions.alias, "bluetooth speaker", Ranker(), encoder)
    assert [h.doc_id for h in degraded.hits] == [h.doc_id for h in bm25.hits]


def test_reembedding_the_alias_is_refused_while_an_active_model_uses_the_old_weights(
        versions, engine, encoder, engine_settings, fs_file, other):
    """Runs last: it moves the module's alias to the other encoder."""
    settings = engine_settings(index=versions.alias)
    upload(App(settings, engine=engine, encoder=encoder), versions.artifact.path, fs_file,
           versions.table_path)
    active = active_model(engine, versions.feature_set.name).name
    live = engine.alias_targets(versions.alias)
    with_other = App(settings, engine=engine, encoder=other)
    with pytest.raises(ConfigError, match=f"would change the cosine features of the active "
                                          f"models .*{active}"):
        index(with_other, [SLICE], progress=False)
    assert engine.alias_targets(versions.alias) == live  # nothing built, nothing moved
    assert index_encoder(engine, versions.alias) == encoder.key
    index(App(settings, engine=engine, encoder=encoder), [SLICE], progress=False, keep=0)
    assert engine.alias_targets(versions.alias) != live  # the same weights: no question
    index(with_other, [SLICE], progress=False, keep=0, allow_encoder_change=True)
    assert index_encoder(engine, versions.alias) == other.key
