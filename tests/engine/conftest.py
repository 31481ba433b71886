"""Real-engine fixtures: both local nodes that `make test` starts (esrank engine up --flavor F).

Every test that takes `engine` runs once per engine: OpenSearch 3.6 + LTR + k-NN and
Elasticsearch 8.18 + the o19s LTR plugin. A missing engine or LTR plugin is a failure, never a
skip. ESRANK_TEST_FLAVORS=opensearch (or elasticsearch) narrows a local run to one engine;
ESRANK_TEST_<FLAVOR>_URL points a flavor at another node.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from support.chorus_slice import SLICE, write_slice_judgments
from support.cleanup import delete_where, remove_deployed
from support.loops import Loop, log_loop, private_feature_set

from esrank.catalogue.index import index_catalogue
from esrank.core.errors import EngineError
from esrank.core.settings import load_settings
from esrank.engine import FLAVORS, Engine, connect
from esrank.evaluation.runs import EVAL_DELTAS, EVAL_HITS, EVAL_ONLINE, EVAL_QUERIES
from esrank.judgments.lists import read_judgments

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URLS = {"opensearch": "http://127.0.0.1:9200", "elasticsearch": "http://127.0.0.1:9201"}
TESTED = [f for f in os.environ.get("ESRANK_TEST_FLAVORS", ",".join(FLAVORS)).split(",") if f]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)


def url_of(flavor: str) -> str:
    return os.environ.get(f"ESRANK_TEST_{flavor.upper()}_URL", DEFAULT_URLS[flavor])


@pytest.fixture(scope="session", params=TESTED)
def engine(request) -> Engine:
    """One real engine with its LTR plugin (the test runs once per engine)."""
    flavor, url = request.param, url_of(request.param)
    try:
        eng = connect(url, flavor=flavor)
        eng.health()
    except EngineError as exc:  # a missing engine is a failure, never a skip
        pytest.fail(f"no {flavor} at {url}: run `esrank engine up --flavor {flavor}` (make "
                    f"test does): {exc}")
    if not eng.has_ltr():
        pytest.fail(f"the {flavor} node at {url} has no LTR plugin ({eng.dialect.ltr_plugin}): "
                    f"set ESRANK_ENGINE__{flavor.upper()}__LTR_PLUGIN and rerun esrank engine "
                    "up (make test takes it from ../shared/plugins)")
    return eng


@pytest.fixture(scope="session")
def engine_settings_factory(engine: Engine):
    """Settings that point esrank at this test engine: engine_settings(index=...)."""
    return lambda **overrides: load_settings(url=engine.transport.url,
                                             flavor=engine.dialect.name, **overrides)


@pytest.fixture()
def engine_settings(engine_settings_factory):
    return engine_settings_factory


@pytest.fixture()
def cli_env(engine: Engine) -> dict[str, str]:
    """The environment for an `esrank` subprocess that uses this test engine."""
    return {**os.environ, "ESRANK_URL": engine.transport.url,
            "ESRANK_FLAVOR": engine.dialect.name}


@pytest.fixture()
def alias(engine: Engine):
    """A fresh alias name, with its indices removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    for index in engine.alias_targets(name):
        engine.delete_index(index)


def _writes(engine: Engine, index: str) -> tuple[int, int]:
    """The documents ever indexed (updates count) and deleted in `index`."""
    stats = engine.transport.request("index stats", "GET", f"/{index}/_stats/indexing")
    total = stats["indices"][index]["primaries"]["indexing"]
    return total["index_total"], total["delete_total"]


@pytest.fixture(scope="session")
def slice_alias(engine: Engine, encoder) -> str:
    """The alias of the Chorus slice (tests/data/chorus_slice.jsonl, 301 products) indexed
    once per engine by the shared encoder, for every test that only reads it. A test that
    changes the index (re-index, alias swap, other weights, partial updates) builds its own
    under `alias`: the teardown fails when anything wrote to this one."""
    alias = f"test-slice-{uuid.uuid4().hex[:8]}"
    report = index_catalogue(engine, alias, [SLICE], encoder, progress=False)
    assert report.indexed == 301 and engine.alias_targets(alias) == [report.index]
    written = _writes(engine, report.index)
    yield alias
    try:
        assert engine.alias_targets(alias) == [report.index], "a test moved the slice's alias"
        assert _writes(engine, report.index) == written, "a test wrote to the read-only slice"
    finally:
        for index in {*engine.alias_targets(alias), report.index}:
            if engine.index_exists(index):
                engine.delete_index(index)


@pytest.fixture(scope="session")
def loop(engine: Engine, encoder, slice_alias, tmp_path_factory) -> Loop:
    """The learning loop on the slice, once per engine: feature_sets/chorus.yaml under a
    private name, the slice's judgments logged with the BM25 window, a model trained; nothing
    deployed (tests deploy it as they need). Its models and registry entry are removed after."""
    tmp = tmp_path_factory.mktemp("loop")
    judged = read_judgments(write_slice_judgments(tmp / "j.csv"))
    fs = private_feature_set(ROOT / "feature_sets" / "chorus.yaml", "loop")
    chain = log_loop(engine, encoder, slice_alias, fs, judged, tmp)
    # without recency: its value changes at midnight (UTC), and a doc whose logged value was
    # a split point would cross it if the two searches of one query (esrank's run, then the
    # engine's _rank_eval) straddled it
    yield chain.trained(tmp / "model", exclude=["recency"])
    remove_deployed(engine, fs.name)


@pytest.fixture()
def run_tag(engine: Engine):
    """A unique prefix for evaluation run and comparison ids (and online metrics' model
    names); what the test pushed under it (esrank-eval-queries, -hits, -deltas,
    esrank-online) is removed afterwards."""
    tag = f"test-{uuid.uuid4().hex[:8]}"
    yield tag
    for index, field in ((EVAL_QUERIES, "run_id"), (EVAL_HITS, "run_id"),
                         (EVAL_DELTAS, "comparison_id"), (EVAL_ONLINE, "model")):
        delete_where(engine, index, {"prefix": {field: tag}})
