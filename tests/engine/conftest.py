"""Real-engine fixtures: the local OpenSearch node that `make test` starts (esrank engine up)."""

from __future__ import annotations

import os
import uuid

import pytest

from esrank.engine import Engine, connect
from esrank.errors import EngineError
from esrank.evaluate import EVAL_DELTAS, EVAL_HITS, EVAL_QUERIES

URL = os.environ.get("ESRANK_URL", "http://127.0.0.1:9200")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        eng = connect(URL)
        eng.info()
    except EngineError as exc:  # a missing engine is a failure, never a skip
        pytest.fail(f"no engine at {URL}: run `esrank engine up` (make test does): {exc}")
    return eng


@pytest.fixture(scope="session")
def ltr_engine(engine: Engine) -> Engine:
    """The engine, required to have the LTR plugin."""
    if "opensearch-ltr" not in engine.plugins():
        pytest.skip("BLOCKED: the engine has no LTR plugin: org.opensearch:ltr:3.6.0.0:zip is "
                    "not served by this machine's Maven Central; set ESRANK_ENGINE__LTR_PLUGIN "
                    "to the plugin zip and rerun esrank engine up")
    return engine


@pytest.fixture()
def alias(engine: Engine):
    """A fresh alias name, with its indices removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    for index in engine.alias_targets(name):
        engine.delete_index(index)


@pytest.fixture()
def run_tag(engine: Engine):
    """A unique prefix for evaluation run and comparison ids; what the test pushed under it
    (esrank-eval-queries, -hits, -deltas) is removed afterwards."""
    tag = f"test-{uuid.uuid4().hex[:8]}"
    yield tag
    for index, field in ((EVAL_QUERIES, "run_id"), (EVAL_HITS, "run_id"),
                         (EVAL_DELTAS, "comparison_id")):
        if engine.index_exists(index):
            engine.transport.request("cleanup", "POST", f"/{index}/_delete_by_query",
                                     body={"query": {"prefix": {field: tag}}},
                                     params={"refresh": "true"})
