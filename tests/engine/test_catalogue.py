from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from esrank.catalogue.index import (
    RejectedBuildError,
    ShrinkError,
    index_body,
    index_catalogue,
    index_is_current,
)
from esrank.catalogue.lookup import fetch_texts
from esrank.core.errors import EngineError
from esrank.engine import connect
from esrank.engine.lease import LEASES_INDEX, LeaseHeldError
from esrank.models.embed_cache import CachedEncoder, EmbeddingCache
from esrank.ranking.search import search

DATA = Path(__file__).resolve().parent.parent / "data"
SLICE = DATA / "chorus_slice.jsonl"


def test_slice_indexed_with_vectors_and_searchable(engine, alias, encoder):
    report = index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], encoder,
                             batch_size=64, progress=False)
    assert report.rejected == []
    assert report.indexed == 301
    assert engine.count(alias) == 301
    doc = engine.search(alias, {"size": 1, "query": {"ids": {"values": ["1993197"]}},
                                "_source": ["title", "short_description", "title_vector",
                                            "text_vector"]})
    source = doc["hits"]["hits"][0]["_source"]
    assert len(source["title_vector"]) == len(source["text_vector"]) == 384
    title, text = encoder.encode([source["title"],
                                  f"{source['title']}. {source['short_description']}"])
    assert sum(a * b for a, b in zip(source["title_vector"], title, strict=True)) > 0.9999
    assert sum(a * b for a, b in zip(source["text_vector"], text, strict=True)) > 0.9999
    texts = fetch_texts(engine, alias, ["1993197", "no-such-doc"])
    assert texts == {"1993197": f"{source['title']}. {source['short_description']}"}
    hits = search(engine, alias, "bluetooth speaker", size=10).hits
    assert len(hits) == 10
    assert any("speaker" in h.title.lower() for h in hits[:3])


def test_bad_products_reported_and_a_rejecting_build_never_goes_live(engine, alias, encoder,
                                                                     tmp_path):
    index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], encoder, limit=3,
                    progress=False)
    live = engine.alias_targets(alias)
    with pytest.raises(RejectedBuildError) as err:  # any rejection: nothing changes
        index_catalogue(engine, alias, [DATA / "products_bad.jsonl"], encoder, progress=False)
    report = err.value.report
    assert report.indexed == 2
    reasons = {r.where.rsplit(":", 1)[1]: r.reason for r in report.rejected}
    assert set(reasons) == {"2", "3", "4", "5", "7"}
    assert "bad-1" in reasons["2"] and "title" in reasons["2"]
    assert "'id'" in reasons["3"]
    assert "price" in reasons["4"] and "12 euro" in reasons["4"]
    assert "date_released" in reasons["5"]
    assert "invalid JSON" in reasons["7"]
    assert engine.alias_targets(alias) == live and engine.count(alias) == 3
    assert not engine.index_exists(report.index)  # the rejected build is gone
    # every product rejected (none indexed): never live, even when rejects are allowed
    no_ids = tmp_path / "no_ids.jsonl"
    no_ids.write_text('{"title": "no id"}\n{"title": "none here either"}\n')
    with pytest.raises(RejectedBuildError, match="no product was indexed"):
        index_catalogue(engine, alias, [no_ids], encoder, allow_rejects=10, progress=False)
    assert engine.alias_targets(alias) == live
    # allowed rejects: the good ones go live
    allowed = index_catalogue(engine, alias, [DATA / "products_bad.jsonl"], encoder,
                              allow_rejects=5, max_shrink=1, progress=False)
    assert engine.count(alias) == 2 and allowed.kept == live


def test_reindex_swaps_alias_keeps_the_previous_and_failed_run_keeps_live_index(engine, alias,
                                                                             encoder):
    index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], encoder, limit=5,
                    progress=False)
    first = engine.alias_targets(alias)
    report = index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], encoder, limit=50,
                             progress=False)
    second = engine.alias_targets(alias)
    assert second != first and len(second) == 1
    assert report.kept == first and engine.index_exists(first[0])  # kept to go back to
    assert engine.count(alias) == 50
    other = index_catalogue(engine, f"{alias}-other", [DATA / "chorus_slice.jsonl"], encoder,
                            limit=3, progress=False)  # another alias sharing the prefix
    third = index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], encoder, limit=20,
                            keep=1, max_shrink=1, progress=False)
    assert third.kept == second and not engine.index_exists(first[0])  # only the newest kept
    assert engine.index_exists(other.index)  # not one of this alias's builds

    class Broken:  # crashes on the second batch, while the first one is being sent
        name, dims, max_tokens, key = "broken", 384, 8, "broken:fp32"
        calls = 0

        def encode(self, texts, batch_size=32):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("encoder crashed")
            return encoder.encode(texts)

    live = engine.alias_targets(alias)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], Broken(), batch_size=10,
                        progress=False)
    assert engine.alias_targets(alias) == live
    assert engine.count(alias) == 20
    # a build left behind by a run killed before its cleanup is never kept as "earlier"
    orphan = f"{alias}-29991231235959-000"  # newer than every real build
    engine.create_index(orphan, index_body(engine.dialect, 384))
    fourth = index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], encoder, limit=10,
                             max_shrink=1, progress=False)
    assert fourth.kept == live and not engine.index_exists(orphan)
    for name in engine.indices(f"{alias}-*"):  # the alias fixture removes the live one only
        engine.delete_index(name)


def test_reindex_from_the_embedding_cache_embeds_nothing_and_indexes_the_same_vectors(
        engine, alias, encoder, tmp_path):
    cached = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    first = index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], cached, limit=30,
                            batch_size=8, progress=False)
    misses, hits = cached.cache.misses, cached.cache.hits
    assert misses > 30 and "cache" in first.encoder  # titles and texts, minus the repeats
    doc = engine.search(alias, {"size": 1, "sort": [{"id": "asc"}]})["hits"]["hits"][0]
    second = index_catalogue(engine, alias, [DATA / "chorus_slice.jsonl"], cached, limit=30,
                             batch_size=8, progress=False)
    assert second.indexed == 30 and cached.cache.misses == misses
    # the build records its encoder: another model or precision makes it stale
    assert index_is_current(engine, alias, cached.key)
    assert not index_is_current(engine, alias, cached.key.replace(":fp32", ":int8"))
    assert cached.cache.hits == hits + misses + hits
    again = engine.search(alias, {"size": 1, "sort": [{"id": "asc"}]})["hits"]["hits"][0]
    assert again["_id"] == doc["_id"]
    for name in ("title_vector", "text_vector"):
        assert again["_source"][name] == doc["_source"][name]
    for name in engine.indices(f"{alias}-*"):
        engine.delete_index(name)


class SlowEncoder:
    """The real encoder, `seconds` slower per call; `then` runs once, on the first call."""

    def __init__(self, inner, seconds: float, then=None):
        self.inner, self.seconds, self.then = inner, seconds, then
        self.name, self.dims, self.max_tokens, self.key = (inner.name, inner.dims,
                                                           inner.max_tokens, inner.key)

    def encode(self, texts, batch_size=32):
        if self.then is not None:
            self.then, then = None, self.then
            then()
        time.sleep(self.seconds)
        return self.inner.encode(texts)


def _builds(engine, alias) -> dict[str, str]:
    """The alias's build indices -> their build state (complete / partial)."""
    return {name: m["mappings"]["_meta"]["esrank_build"]
            for name, m in engine.mapping(f"{alias}-*").items()}


def test_concurrent_runs_on_one_alias_one_builds_the_other_changes_nothing(engine, alias,
                                                                           encoder):
    index_catalogue(engine, alias, [SLICE], encoder, limit=20, progress=False)

    def run(start: threading.Barrier, outcomes: list) -> None:
        start.wait()
        try:
            outcomes.append(index_catalogue(engine, alias, [SLICE], SlowEncoder(encoder, 0.3),
                                            limit=40, batch_size=10, keep=0, progress=False))
        except LeaseHeldError as exc:
            outcomes.append(exc)

    for _ in range(3):
        start, outcomes = threading.Barrier(2), []
        threads = [threading.Thread(target=run, args=(start, outcomes)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        [report] = [o for o in outcomes if not isinstance(o, Exception)]
        [held] = [o for o in outcomes if isinstance(o, Exception)]
        assert f"'index:{alias}' is held by esrank index --alias {alias}" in str(held)
        assert engine.alias_targets(alias) == [report.index] and engine.count(alias) == 40
        assert _builds(engine, alias) == {report.index: "complete"}  # nothing half-built left
    assert engine.get_document(LEASES_INDEX, f"index:{alias}") is None  # released


def test_a_held_lease_refuses_at_once_and_an_expired_one_is_taken_over(engine, alias, encoder):
    index_catalogue(engine, alias, [SLICE], encoder, limit=5, progress=False)
    live, lease = engine.alias_targets(alias), f"index:{alias}"
    holder = {"operation": "esrank index", "owner": "elsewhere:1", "since": "then",
              "expires": time.time() + 60}
    engine.put_document(LEASES_INDEX, lease, holder)
    with pytest.raises(LeaseHeldError, match="held by esrank index on elsewhere:1"):
        index_catalogue(engine, alias, [SLICE], encoder, limit=5, progress=False)
    assert list(_builds(engine, alias)) == live  # no index was even created
    _, version = engine.get_document(LEASES_INDEX, lease)
    engine.put_document(LEASES_INDEX, lease, {**holder, "expires": time.time() - 1}, version)
    report = index_catalogue(engine, alias, [SLICE], encoder, limit=5, progress=False)
    assert engine.alias_targets(alias) == [report.index]


def test_an_alias_moved_during_the_build_is_left_where_it_was_moved(engine, alias, encoder):
    index_catalogue(engine, alias, [SLICE], encoder, limit=5, progress=False)
    old = engine.alias_targets(alias)
    manual = f"{alias}-by-hand"
    engine.create_index(manual, index_body(engine.dialect, 384))

    def move():  # someone points the alias elsewhere by hand while the build runs
        engine.swap_alias(alias, manual, old)

    with pytest.raises(EngineError, match="was moved by someone else"):
        index_catalogue(engine, alias, [SLICE], SlowEncoder(encoder, 0, move), limit=5,
                        progress=False)
    assert engine.alias_targets(alias) == [manual]
    assert set(_builds(engine, alias)) == {*old, manual}  # the refused build is gone
    for name in old:
        engine.delete_index(name)


def test_a_build_that_drops_too_much_of_the_live_alias_never_goes_live(engine, alias, encoder):
    index_catalogue(engine, alias, [SLICE], encoder, limit=20, progress=False)
    live = engine.alias_targets(alias)
    with pytest.raises(ShrinkError, match="holds 10 products.* serves 20: 50% fewer"):
        index_catalogue(engine, alias, [SLICE], encoder, limit=10, progress=False)
    assert engine.alias_targets(alias) == live and engine.count(alias) == 20
    report = index_catalogue(engine, alias, [SLICE], encoder, limit=10, max_shrink=0.5,
                             progress=False)
    assert report.replaced == 20 and engine.count(alias) == 10


def test_long_ids_and_repeated_ids_are_rejections_not_a_failed_bulk(engine, alias, encoder,
                                                                    tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"id": "1", "title": "kettle"}, {"id": "x" * 600, "title": "long id"},
            {"id": "2", "title": "toaster"}, {"id": 1, "title": "kettle again"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RejectedBuildError, match="2 products were rejected"):
        index_catalogue(engine, alias, [path], encoder, progress=False)
    report = index_catalogue(engine, alias, [path], encoder, allow_rejects=2, progress=False)
    assert report.indexed == 2 and engine.count(alias) == 2
    assert sorted(r.where.rsplit(":", 1)[1] for r in report.rejected) == ["2", "4"]


def test_engine_down_is_a_clear_engine_error():
    down = connect("http://127.0.0.1:9", flavor="opensearch", timeout=2)
    with pytest.raises(EngineError, match="cannot reach http://127.0.0.1:9"):
        down.health()


@pytest.mark.parametrize("userinfo", ["elastic:hunter2", "hunter2"])
def test_credentials_in_the_url_work_on_either_engine_and_never_show(engine, cli_env, userinfo):
    import subprocess
    import sys

    url = engine.transport.url.replace("://", f"://{userinfo}@")
    assert connect(url, flavor=engine.dialect.name).health()["status"] in ("green", "yellow")
    for flavor in (engine.dialect.name, "auto"):  # auto: detection sends them too
        run = subprocess.run([sys.executable, "-m", "esrank.cli", "-vv", "models", "list"],
                             env={**cli_env, "ESRANK_URL": url, "ESRANK_FLAVOR": flavor},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "hunter2" not in run.stdout + run.stderr


def test_engine_up_is_idempotent_and_reports_plugins(engine):
    import json
    import os
    import subprocess
    import sys

    flavor = engine.dialect.name
    if os.environ.get(f"ESRANK_TEST_{flavor.upper()}_URL"):
        pytest.fail("this test manages the local node: unset ESRANK_TEST_*_URL")
    run = subprocess.run([sys.executable, "-m", "esrank.cli", "engine", "up", "--flavor",
                          flavor, "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["started"] is False and info["health"] == "green"
    assert info["flavor"] == flavor and info["url"] == engine.transport.url
    assert engine.dialect.ltr_plugin in info["plugins"]
    if flavor == "opensearch":
        assert "opensearch-knn" in info["plugins"]
    # which plugin build it runs, and how that was checked
    assert len(info["ltr_plugin"]["sha256"]) == 64 and info["ltr_plugin"]["verified"]
