from __future__ import annotations

import pytest

from esrank.config import load_settings
from esrank.errors import ConfigError


def test_env_overrides_file_and_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "esrank.toml"
    cfg.write_text('index = "catalogue"\n[engine]\nheap = "2g"\n[engine.opensearch]\n'
                   'port = 9250\n[engine.elasticsearch]\nport = 9251\n')
    monkeypatch.setenv("ESRANK_CONFIG", str(cfg))
    monkeypatch.setenv("ESRANK_ENGINE__OPENSEARCH__PORT", "9333")
    monkeypatch.setenv("ESRANK_PASSWORD", "hunter2")
    s = load_settings()
    assert s.index == "catalogue" and s.engine.heap == "2g" and s.engine.opensearch.port == 9333
    assert s.engine_url == "http://127.0.0.1:9333" and s.uses_local_engine
    assert s.engine_flavor == "opensearch"
    assert s.engine.elasticsearch.version == "8.18.6"  # the file set only the port
    es = load_settings(flavor="elasticsearch")
    assert es.engine_url == "http://127.0.0.1:9251" and es.engine_flavor == "elasticsearch"
    assert "hunter2" not in repr(s) and s.password.get_secret_value() == "hunter2"


def test_url_means_an_existing_cluster(monkeypatch):
    monkeypatch.setenv("ESRANK_URL", "https://search.example:9200")
    s = load_settings()
    assert s.engine_url == "https://search.example:9200" and not s.uses_local_engine
    assert s.engine_flavor == "auto"  # asked of the cluster


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("ESRANK_ENGINE__OPENSEARCH__PORT", "ninety")
    with pytest.raises(ConfigError, match="engine.opensearch.port"):
        load_settings()
    monkeypatch.delenv("ESRANK_ENGINE__OPENSEARCH__PORT")
    monkeypatch.setenv("ESRANK_CONFIG", "/nonexistent/esrank.toml")
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()
