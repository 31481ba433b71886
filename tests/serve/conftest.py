"""Sidecar fixtures: the shipped MiniLM (ONNX Runtime when installed), loaded once."""

from __future__ import annotations

import pytest

from esrank.core.settings import ServeSettings, load_settings
from esrank.serve import create_app


@pytest.fixture(scope="session")
def sidecar_encoder(tmp_path_factory):
    from esrank.models.encoder import load_encoder

    return load_encoder(backend="auto", onnx_dir=tmp_path_factory.mktemp("onnx"))


@pytest.fixture()
def make_app(sidecar_encoder):
    """create_app with settings overrides, e.g. make_app(serve={"token": "t"}); `engine`: a
    stand-in for the unreachable one."""

    def make(encoder=None, reranker=None, engine=None, **overrides):
        serve = ServeSettings(**overrides.pop("serve", {}))
        settings = load_settings(**{"url": "http://127.0.0.1:9", "timeout": 2, **overrides})
        settings = settings.model_copy(update={"serve": serve})
        return create_app(settings, encoder=encoder or sidecar_encoder, reranker=reranker,
                          engine=engine)

    return make


@pytest.fixture()
def client(make_app):
    return make_app().test_client()
