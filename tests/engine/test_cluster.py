"""The 2-node local clusters `make test` starts (esrank engine up --nodes 2 --port 9220 for
OpenSearch, 9221 for Elasticsearch): esrank's indices get their replica, and a node killed
under search load loses no live data while searches fail over to the other node."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import TESTED
from support.chorus_slice import SLICE, write_slice_judgments
from support.cleanup import remove_deployed
from support.loops import log_loop, private_feature_set

from esrank.app import App
from esrank.catalogue.index import index_catalogue
from esrank.core.errors import EngineError
from esrank.core.settings import load_settings
from esrank.deploy import registry
from esrank.engine import Engine, Ranked, Rescore, connect
from esrank.engine.lease import LEASES_INDEX
from esrank.engine.local import status, stop_node, up
from esrank.judgments.lists import read_judgments

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_PORTS = {"opensearch": 9220, "elasticsearch": 9221}  # as the Makefile starts them


@pytest.fixture(scope="module", params=TESTED)
def cluster(request):
    """(the local 2-node cluster, an Engine given both nodes' URLs); missing is a failure."""
    flavor = request.param
    local = App(load_settings()).local_engine(flavor, nodes=2, port=CLUSTER_PORTS[flavor])
    info = status(local)
    if info.get("nodes_joined") != 2:
        pytest.fail(f"no 2-node {flavor} cluster at {local.urls} ({info.get('health')}): run "
                    f"`esrank engine up --flavor {flavor} --nodes 2 --port "
                    f"{CLUSTER_PORTS[flavor]}` (make test does)")
    return local, connect(",".join(local.urls), flavor=flavor)


@pytest.fixture(scope="module")
def deployed(cluster, encoder, tmp_path_factory):
    """The Chorus slice indexed on the cluster and a model of a private feature set deployed
    over it; removed after."""
    _, engine = cluster
    tmp = tmp_path_factory.mktemp("cluster")
    alias = f"test-{uuid.uuid4().hex[:8]}"
    index = index_catalogue(engine, alias, [SLICE], encoder, progress=False).index
    fs = private_feature_set(ROOT / "feature_sets" / "chorus.yaml", "cluster")
    judged = read_judgments(write_slice_judgments(tmp / "j.csv"))
    loop = log_loop(engine, encoder, alias, fs, judged, tmp).trained(
        tmp / "model", exclude=["recency"]).with_deploy(engine)
    assert loop.deployed.activated
    yield loop
    remove_deployed(engine, fs.name, [index])


def live(engine: Engine, loop) -> dict:
    """What is live: the alias, its documents, the feature set and model in the plugin's
    store, and the registry's active pointer."""
    name = loop.feature_set.engine_name
    return {"alias": engine.alias_targets(loop.alias), "docs": engine.count(loop.alias),
            "feature_set": engine.get_feature_set(name) is not None,
            "model": engine.get_model(loop.deployed.model),
            "active": registry.entry(engine, loop.feature_set.name).active}


def test_esrank_indices_get_a_replica_on_the_second_node(cluster, deployed):
    _, engine = cluster
    for index in (*engine.alias_targets(deployed.alias), registry.REGISTRY_INDEX, LEASES_INDEX):
        copies = [c for c in engine.shard_copies(index) if c["state"] == "STARTED"]
        assert sorted(c["prirep"] for c in copies) == ["p", "r"], (index, copies)
        assert len({c["node"] for c in copies}) == 2


def test_a_node_killed_under_search_load_loses_no_live_data(cluster, deployed):
    local, engine = cluster
    queries = list(deployed.queries)[:20]
    params = deployed.params_for(queries)
    rescore = {q: Rescore(deployed.feature_set.engine_name, p, model=deployed.deployed.model,
                          window=20) for q, p in zip(queries, params, strict=True)}

    def ranked(query: str) -> list[str]:
        [hits] = engine.ranked(deployed.alias, [Ranked({"match": {"title": query}}, size=10,
                                                      rescore=rescore[query])])
        return [h["_id"] for h in hits["hits"]["hits"]]

    expected = {q: ranked(q) for q in queries}
    before = live(engine, deployed)
    stop, killed_at, outcomes = threading.Event(), [], []

    def load(worker: int) -> None:
        i = worker
        while not stop.is_set():
            query = queries[i % len(queries)]
            try:
                outcomes.append((time.monotonic(), ranked(query) == expected[query]))
            except EngineError as exc:
                outcomes.append((time.monotonic(), str(exc)))
            i += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        killed_at.append(time.monotonic())
        assert stop_node(local.node(1), kill=True)
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        up(local, progress=False)  # the node comes back; waits for green (replicas recovered)
    after_kill = [ok for at, ok in outcomes if at > killed_at[0]]
    assert len(after_kill) >= len(threads) and all(ok is True for ok in after_kill), \
        [ok for ok in after_kill if ok is not True][:3]
    assert all(ok is True for _, ok in outcomes)
    assert live(engine, deployed) == before
    assert {ranked(q) == expected[q] for q in queries} == {True}
