from __future__ import annotations

import pytest

from esrank.core.errors import ConfigError
from esrank.core.settings import load_settings


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


def test_a_cluster_is_several_urls(monkeypatch):
    monkeypatch.setenv("ESRANK_ENGINE__OPENSEARCH__NODES", "3")
    assert load_settings().engine_url == ("http://127.0.0.1:9200,http://127.0.0.1:9210,"
                                          "http://127.0.0.1:9220")
    monkeypatch.setenv("ESRANK_URL", "https://a:9200, https://b:9200")
    assert load_settings().engine_url == "https://a:9200, https://b:9200"
    monkeypatch.setenv("ESRANK_URL", "https://a:9200,b:9200")
    with pytest.raises(ConfigError, match="ESRANK_URL=.*needs http"):
        load_settings()
    monkeypatch.setenv("ESRANK_LLM__ENDPOINT", "https://a:8080,https://b:8080")
    monkeypatch.delenv("ESRANK_URL")
    with pytest.raises(ConfigError, match="ESRANK_LLM__ENDPOINT"):  # one endpoint only
        load_settings()


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("ESRANK_ENGINE__OPENSEARCH__PORT", "ninety")
    with pytest.raises(ConfigError, match="engine.opensearch.port"):
        load_settings()
    monkeypatch.delenv("ESRANK_ENGINE__OPENSEARCH__PORT")
    monkeypatch.setenv("ESRANK_CONFIG", "/nonexistent/esrank.toml")
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


@pytest.mark.parametrize("setting", ["ESRANK_URL", "ESRANK_LLM__ENDPOINT"])
@pytest.mark.parametrize("url, problem", [
    ("elastic:hunter2@host:9200", "needs http:// or https://"),  # no scheme
    ("ftp://hunter2@host", "needs http:// or https://"),
    ("http://localhost:abc", "has no valid host and port"),
    ("http://elastic:hun/ter2@host", "has no valid host and port"),  # an unencoded "/"
])
def test_an_unusable_url_names_its_setting_and_hides_its_credentials(monkeypatch, setting, url,
                                                                     problem):
    monkeypatch.setenv(setting, url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"{setting}=" in str(err.value) and problem in str(err.value)
    for shown in (str(err.value), str(err.value.__cause__)):  # the cause shows no input
        assert "hunter2" not in shown and "ter2" not in shown


def test_urls_with_credentials_load_as_given(monkeypatch):
    monkeypatch.setenv("ESRANK_URL", "https://hunter2@search.example")
    monkeypatch.setenv("ESRANK_LLM__ENDPOINT", "http://user:pw@llm.example:8000/v1")
    s = load_settings()
    assert (s.engine_url, s.llm.endpoint) == ("https://hunter2@search.example",
                                              "http://user:pw@llm.example:8000/v1")


@pytest.mark.parametrize("token,words", [("", "is empty"), ("   ", "is empty"),
                                         (" padded-token-0123456 ", "starts or ends with "
                                                                    "whitespace"),
                                         ("s3cret", "has 6 characters, fewer than 16")])
def test_a_token_that_would_not_protect_is_refused(monkeypatch, token, words):
    monkeypatch.setenv("ESRANK_SERVE__TOKEN", token)
    with pytest.raises(ConfigError, match=f"ESRANK_SERVE__TOKEN {words}") as refused:
        load_settings()
    secret = token.strip()
    assert not secret or secret not in str(refused.value)  # the token itself is never shown


def test_one_notion_of_authentication_on():
    assert load_settings().serve.auth_token is None
    s = load_settings(serve={"token": "a-token-of-16-ch"})
    assert s.serve.auth_token == b"a-token-of-16-ch"
