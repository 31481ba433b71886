from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from esrank.engine.local import Artifact, LocalEngine, download_url, find_java, status
from esrank.errors import ConfigError, EngineError


def test_maven_coordinates_follow_the_engine_version(tmp_path):
    engine = LocalEngine(home=tmp_path, version="3.6.0")
    urls = [a.url("https://repo.example/m2") for a in engine.artifacts()]
    assert urls == [
        "https://repo.example/m2/org/opensearch/distribution/integ-test-zip/opensearch/3.6.0/"
        "opensearch-3.6.0.zip",
        "https://repo.example/m2/org/opensearch/plugin/opensearch-knn/3.6.0.0/"
        "opensearch-knn-3.6.0.0.zip"]
    assert engine.ltr_artifact == Artifact("org.opensearch", "ltr", "3.6.0.0")


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


def test_java_older_than_21_is_refused(tmp_path):
    jdk = tmp_path / "jdk17"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "bin" / "java").write_text("")
    (jdk / "release").write_text('JAVA_VERSION="17.0.15"\n')
    with pytest.raises(ConfigError, match="JDK 21 or newer"):
        find_java(jdk)
    (jdk / "release").write_text('JAVA_VERSION="21.0.4"\n')
    assert find_java(jdk) == jdk


def test_status_without_a_started_node(tmp_path):
    info = status(LocalEngine(home=tmp_path, port=9))
    assert info["running"] is False and info["pid"] is None
    assert Path(info["install_dir"]) == tmp_path / "engine" / "opensearch-3.6.0"
