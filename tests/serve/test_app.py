"""The sidecar with the real shipped model: endpoints, the spec, bad input, overload, auth."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from esrank.serve import SPEC


def test_health_and_readiness_without_an_engine(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503  # the engine (port 9) is unreachable
    assert ready.json["ready"] is False and "unreachable" in ready.json["engine"]
    assert ready.json["dims"] == 384 and ready.json["backend"]


def test_the_spec_is_valid_and_matches_the_app(make_app):
    from openapi_spec_validator import validate

    spec = yaml.safe_load(SPEC.read_text())
    validate(spec)
    app = make_app()
    routes = {(r.rule, m.lower()) for r in app.url_map.iter_rules() if r.endpoint != "static"
              for m in r.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented
    assert app.test_client().get("/openapi.json").json == spec
    # and docs/sidecar.md's endpoint table names every one
    doc = (SPEC.parents[2] / "docs" / "sidecar.md").read_text()
    missing = [f"{m.upper()} {p}" for p, m in sorted(documented)
               if f"| `{m.upper()} {p}` |" not in doc]
    assert not missing, f"docs/sidecar.md lacks {missing}"


def test_embed_matches_the_encoder_and_says_what_it_truncated(client, sidecar_encoder):
    from esrank.encoder import load_encoder

    long = "wireless bluetooth headphones " * 200
    r = client.post("/embed", json={"texts": ["bluetooth speaker", long]})
    assert r.status_code == 200, r.json
    vectors = np.array(r.json["vectors"], dtype=np.float32)
    reference = load_encoder(backend="numpy").encode(["bluetooth speaker", long])
    assert (vectors * reference).sum(axis=1).min() > 0.9999
    assert r.json["truncated"] == [1] and r.json["dims"] == 384


@pytest.mark.parametrize("send,status,words", [
    ({"data": b'{"texts": ["a"', "content_type": "application/json"}, 400, "malformed JSON"),
    ({"data": b'{"texts": ["\xff"]}', "content_type": "application/json"}, 400, "not UTF-8"),
    ({"data": b'{"texts": ["a"]}', "content_type": "text/plain"}, 415, "application/json"),
    ({"json": ["a"]}, 400, "JSON object"),
    ({"json": {}}, 400, "'texts' is required"),
    ({"json": {"texts": "a"}}, 400, "must be list"),
    ({"json": {"texts": []}}, 400, "must not be empty"),
    ({"json": {"texts": ["ok", 3]}}, 400, "texts[1] must be a string"),
    ({"json": {"texts": ["ok", "  "]}}, 400, "texts[1] is empty"),
    ({"json": {"texts": ["a"] * 257}}, 400, "at most 256"),
    ({"json": {"texts": ["a" * 10_001]}}, 400, "at most 10000"),
    ({"json": {"texts": ["a"], "extra": 1}}, 400, "unknown field"),
])
def test_bad_embed_requests_get_a_4xx_naming_the_problem(client, send, status, words):
    r = client.post("/embed", **send)
    assert r.status_code == status
    assert words in r.json["error"]


def test_bad_search_requests_are_refused_before_the_engine(client):
    for body, words in (({"query": ""}, "query[0] is empty"), ({"query": 1}, "must be str"),
                        ({"query": "tv", "size": 0}, "'size' must be 1..100"),
                        ({"query": "tv", "size": True}, "must be int"),
                        ({"query": "tv", "window": 0}, "'window' must be 1..10000")):
        r = client.post("/search", json=body)
        assert r.status_code == 400 and words in r.json["error"], (body, r.json)
    assert client.get("/embed").status_code == 405


def test_an_unreachable_engine_is_a_502_with_the_reason(client):
    r = client.post("/search", json={"query": "tv", "model": "bm25"})
    assert r.status_code == 502 and "cannot reach http://127.0.0.1:9" in r.json["error"]


def test_bearer_token(make_app):
    c = make_app(serve={"token": "s3cret"}).test_client()
    assert c.get("/healthz").status_code == 200
    assert c.post("/embed", json={"texts": ["a"]}).status_code == 401
    ok = c.post("/embed", json={"texts": ["a"]}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert "s3cret" not in c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text


class Slow:
    """The real encoder, made slow: enough to fill the queue."""

    def __init__(self, inner, seconds):
        self.inner, self.seconds = inner, seconds
        self.name, self.dims, self.max_tokens = inner.name, inner.dims, inner.max_tokens
        self.token_counts = inner.token_counts

    def encode(self, texts, batch_size=64):
        time.sleep(self.seconds)
        return self.inner.encode(texts, batch_size)


def test_overload_answers_503_with_retry_after_and_recovers(make_app, sidecar_encoder):
    app = make_app(encoder=Slow(sidecar_encoder, 0.3),
                   serve={"max_queue": 2, "max_batch": 1, "max_wait_us": 0})
    statuses, headers = [], []

    def call(i):
        r = app.test_client().post("/embed", json={"texts": [f"text number {i}"]})
        statuses.append(r.status_code)
        headers.append(r.headers.get("Retry-After"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) == {200, 503}
    assert all(h and int(h) >= 1 for s, h in zip(statuses, headers, strict=True) if s == 503)
    assert app.test_client().post("/embed", json={"texts": ["after"]}).status_code == 200


def test_concurrent_requests_are_batched_and_counted(make_app, sidecar_encoder):
    app = make_app(encoder=Slow(sidecar_encoder, 0.05), serve={"max_wait_us": 20_000})
    results = []

    def call(i):
        results.append(app.test_client().post("/embed", json={"texts": [f"query {i}"]}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results)
    stats = app.extensions["esrank"].batcher.stats
    assert stats.texts == 16 and stats.batches < 16  # some requests shared a forward pass
    # a repeated single text comes from the cache
    app.test_client().post("/embed", json={"texts": ["query 1"]})
    assert stats.cache_hits >= 1
    metrics = app.test_client().get("/metrics").text
    assert 'esrank_requests_total{endpoint="/embed",status="200"} 17.0' in metrics
    assert "esrank_batch_size_bucket" in metrics and "esrank_queue_depth" in metrics
