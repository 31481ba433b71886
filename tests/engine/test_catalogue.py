from __future__ import annotations

from pathlib import Path

import pytest

from esrank.catalogue import (
    RejectedBuildError,
    fetch_texts,
    index_body,
    index_catalogue,
    index_is_current,
)
from esrank.embed_cache import CachedEncoder, EmbeddingCache
from esrank.engine import connect
from esrank.errors import EngineError
from esrank.search import search

DATA = Path(__file__).resolve().parent.parent / "data"


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
                              allow_rejects=5, progress=False)
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
                            keep=1, progress=False)
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
                             progress=False)
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


def test_engine_down_is_a_clear_engine_error():
    down = connect("http://127.0.0.1:9", flavor="opensearch", timeout=2)
    with pytest.raises(EngineError, match="cannot reach http://127.0.0.1:9"):
        down.health()


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
