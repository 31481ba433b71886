from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from esrank.core.errors import ConfigError, EngineError
from esrank.engine.downloads import download_url
from esrank.engine.install import DISTRIBUTIONS, PINNED_LTR, Distribution, ltr_plugin
from esrank.engine.java import find_java
from esrank.engine.local import LocalEngine, status


def test_maven_coordinates_follow_the_engine_version():
    repo = "https://repo.example/m2"
    opensearch, elasticsearch = DISTRIBUTIONS["opensearch"], DISTRIBUTIONS["elasticsearch"]
    assert [a.url(repo) for a in opensearch.artifacts("3.6.0")] == [
        f"{repo}/org/opensearch/distribution/integ-test-zip/opensearch/3.6.0/"
        "opensearch-3.6.0.zip",
        f"{repo}/org/opensearch/plugin/opensearch-knn/3.6.0.0/opensearch-knn-3.6.0.0.zip"]
    assert [a.url(repo) for a in elasticsearch.artifacts("8.18.6")] == [
        f"{repo}/org/elasticsearch/distribution/integ-test-zip/elasticsearch/8.18.6/"
        "elasticsearch-8.18.6.zip"]
    # the LTR plugins' official releases, tried in this order
    assert elasticsearch.ltr_releases("8.18.6", repo) == [
        "https://github.com/o19s/elasticsearch-learning-to-rank/releases/download/"
        "v1.5.10-es8.18.6/ltr-plugin-v1.5.10-es8.18.6.zip"]
    assert opensearch.ltr_releases("3.6.0", repo) == [
        f"{repo}/org/opensearch/plugin/opensearch-ltr/3.6.0.0/opensearch-ltr-3.6.0.0.zip",
        "https://artifacts.opensearch.org/releases/plugins/opensearch-ltr/3.6.0.0/"
        "opensearch-ltr-3.6.0.0.zip"]


def _zip(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def test_the_plugin_override_wins_and_says_how_it_was_verified(tmp_path):
    plugin = _zip(tmp_path / "ltr.zip", b"plugin bytes")
    digest = hashlib.sha256(b"plugin bytes").hexdigest()
    engine = LocalEngine(home=tmp_path, flavor="elasticsearch", version="8.18.6",
                         ltr_plugin=str(plugin))
    path, info = ltr_plugin(engine, tmp_path / "cache", progress=False)
    assert path == plugin and info["source"] == "ESRANK_ENGINE__ELASTICSEARCH__LTR_PLUGIN"
    assert info["sha256"] == digest and info["verified"].startswith("not verified")
    checked = LocalEngine(home=tmp_path, ltr_plugin=str(plugin), ltr_plugin_sha256=digest)
    assert ltr_plugin(checked, tmp_path, progress=False)[1]["verified"] == \
        "matches the sha256 given"
    with pytest.raises(ConfigError, match="expected 0000"):
        ltr_plugin(LocalEngine(home=tmp_path, ltr_plugin=str(plugin),
                               ltr_plugin_sha256="0" * 64), tmp_path, progress=False)
    # an override that is wrong fails: no silent fallback to another build
    with pytest.raises(ConfigError, match="no such file"):
        ltr_plugin(LocalEngine(home=tmp_path, ltr_plugin=str(tmp_path / "nope.zip")),
                   tmp_path, progress=False)
    with pytest.raises(ConfigError, match="needs its sha256"):
        ltr_plugin(LocalEngine(home=tmp_path, ltr_plugin=plugin.as_uri()), tmp_path,
                   progress=False)


def test_a_pinned_build_is_named_and_official_releases_are_the_fallback(tmp_path, monkeypatch):
    payload = b"a build from the source tag"
    monkeypatch.setitem(PINNED_LTR, hashlib.sha256(payload).hexdigest(), "test build, tag x")
    release = _zip(tmp_path / "release.zip", payload)
    monkeypatch.setattr(Distribution, "ltr_releases",
                        lambda self, version, repo: [(tmp_path / "gone.zip").as_uri(),
                                                     release.as_uri()])
    path, info = ltr_plugin(LocalEngine(home=tmp_path), tmp_path / "cache", progress=False)
    assert path.read_bytes() == payload
    assert info == {"source": "official release", "location": release.as_uri(),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                    "verified": "pinned sha256: test build, tag x"}
    monkeypatch.setattr(Distribution, "ltr_releases",
                        lambda self, version, repo: [(tmp_path / "gone.zip").as_uri()])
    with pytest.raises(EngineError, match="no source had the OpenSearch 3.6.0 LTR plugin: "
                                          ".*gone.zip.*Set ESRANK_ENGINE__OPENSEARCH__LTR_PLUGIN"):
        ltr_plugin(LocalEngine(home=tmp_path), tmp_path / "cache2", progress=False)


def test_download_verifies_the_digest_and_leaves_nothing_on_mismatch(tmp_path):
    src = tmp_path / "a.zip"
    src.write_bytes(b"payload")
    good = ("sha256", hashlib.sha256(b"payload").hexdigest())
    target = tmp_path / "cache" / "a.zip"
    with pytest.raises(EngineError, match="sha256 mismatch"):
        download_url(src.as_uri(), target, ("sha256", "0" * 64), progress=False)
    assert not target.exists() and not target.with_suffix(".part").exists()
    assert download_url(src.as_uri(), target, good, progress=False).read_bytes() == b"payload"


def test_missing_download_is_an_engine_error_with_status(tmp_path):
    with pytest.raises(EngineError) as err:
        download_url((tmp_path / "nope.zip").as_uri(), tmp_path / "x.zip", None, progress=False)
    assert "nope.zip" in str(err.value)


def test_java_older_than_the_engine_needs_is_refused(tmp_path):
    jdk = tmp_path / "jdk17"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "bin" / "java").write_text("")
    (jdk / "release").write_text('JAVA_VERSION="17.0.15"\n')
    with pytest.raises(ConfigError, match="JDK 21 or newer"):
        find_java(jdk, DISTRIBUTIONS["opensearch"].min_java)
    assert find_java(jdk, DISTRIBUTIONS["elasticsearch"].min_java) == jdk  # 8.18 runs on 17
    (jdk / "release").write_text('JAVA_VERSION="21.0.4"\n')
    assert find_java(jdk, 21) == jdk


def test_status_without_a_started_node(tmp_path):
    info = status(LocalEngine(home=tmp_path, port=9))
    assert info["running"] is False and info["pid"] is None
    assert Path(info["install_dir"]) == tmp_path / "engine" / "opensearch-3.6.0"
    es = status(LocalEngine(home=tmp_path, flavor="elasticsearch", version="8.18.6", port=9))
    assert es["flavor"] == "elasticsearch"
    assert Path(es["install_dir"]) == tmp_path / "engine" / "elasticsearch-8.18.6"


@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_a_two_node_cluster_seeds_each_node_with_both_and_one_manager(tmp_path, flavor):
    from esrank.engine.local import _write_config

    (tmp_path / "engine" / f"{flavor}-1" / "config").mkdir(parents=True)
    cluster = LocalEngine(home=tmp_path, flavor=flavor, version="1", port=9220,
                          transport_port=9320, nodes=2)
    ymls = []
    for node in map(cluster.node, range(2)):
        _write_config(node, "plugins")
        ymls.append((node.conf_dir / f"{flavor}.yml").read_text())
    manager = DISTRIBUTIONS[flavor].manager_role
    assert cluster.urls == ["http://127.0.0.1:9220", "http://127.0.0.1:9230"]
    for yml in ymls:
        assert 'discovery.seed_hosts: ["127.0.0.1:9320", "127.0.0.1:9330"]' in yml
        assert f'["{flavor}-9220"]' in yml and "single-node" not in yml
        assert f"cluster.name: esrank-local-{flavor}-9220" in yml
    assert f'node.roles: ["{manager}", "data", "ingest"]' in ymls[0]
    assert 'node.roles: ["data", "ingest"]' in ymls[1] and "http.port: 9230" in ymls[1]
    with pytest.raises(EngineError, match="no node 2"):
        cluster.node(2)
    # three nodes keep a majority of managers after losing any one
    assert LocalEngine(home=tmp_path, nodes=3).managers == [0, 1, 2]
    single = LocalEngine(home=tmp_path, flavor=flavor, version="1", port=9999, nodes=1)
    _write_config(single.node(0), "plugins")
    assert "discovery.type: single-node" in (single.node(0).conf_dir / f"{flavor}.yml").read_text()
