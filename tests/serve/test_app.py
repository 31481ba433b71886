"""The sidecar with the real shipped model: endpoints, the spec, bad input, overload, auth."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml
from support.stand_in import black_hole

from esrank.serve import COMPARE_COOKIE, SPEC


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
    from esrank.models.encoder import load_encoder

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
    ({"data": b'{"texts": ["ok", "\\ud800"]}', "content_type": "application/json"}, 400,
     "texts[1] holds a lone surrogate"),
    ({"data": b'{"texts": ["a"], "\\udfff": 1}', "content_type": "application/json"}, 400,
     "a field name in the body holds a lone surrogate"),
    ({"data": b"[" * 3000 + b"]" * 3000, "content_type": "application/json"}, 400,
     "nested too deeply"),
    ({"json": {"texts": [[[[[[[[[[[[[[[[["a"]]]]]]]]]]]]]]]]]}}, 400, "nested too deeply"),
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


@pytest.mark.parametrize("path", ["/embed", "/search", "/events", "/rerank", "/compare/query",
                                  "/compare/queries", "/compare/why"])
def test_every_post_refuses_deep_nesting_and_lone_surrogates_with_a_400(client, path):
    for raw, words in ((b'{"a": ' * 2500 + b"1" + b"}" * 2500, "nested too deeply"),
                       (b'{"query": "\\ud800"}', "query holds a lone surrogate")):
        r = client.post(path, data=raw, content_type="application/json")
        assert r.status_code == 400 and words in r.json["error"], (path, r.json)


def test_a_lone_surrogate_query_never_counts_as_a_degraded_search(client):
    r = client.post("/search", data=b'{"query": "tv \\udc80"}', content_type="application/json")
    assert r.status_code == 400
    assert "esrank_degraded_searches_total 0.0" in client.get("/metrics").text


@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_an_unreachable_engine_is_a_502_with_the_reason(make_app, flavor):
    r = make_app(flavor=flavor).test_client().post("/search", json={"query": "tv", "model": "bm25"})
    assert r.status_code == 502 and "cannot reach http://127.0.0.1:9" in r.json["error"]


@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_an_engine_that_does_not_answer_is_a_504_and_not_ready(make_app, flavor):
    with black_hole() as url:
        c = make_app(url=url, flavor=flavor, serve={"engine_timeout": 0.5}).test_client()
        started = time.monotonic()
        search = c.post("/search", json={"query": "tv", "model": "bm25"})
        ready = c.get("/readyz")
        assert time.monotonic() - started < 3
    timed_out = f"no answer from {url} within 0.5 s (timed out)"
    assert search.status_code == 504 and timed_out in search.json["error"]
    assert ready.status_code == 503 and ready.json["ready"] is False
    assert timed_out in ready.json["engine"]


TOKEN = "s3cret-token-0123"


def test_bearer_token(make_app):
    c = make_app(serve={"token": TOKEN}).test_client()
    assert c.get("/healthz").status_code == 200
    for path, body in (("/embed", {"texts": ["a"]}), ("/search", {"query": "tv"})):
        assert c.post(path, json=body).status_code == 401
        assert c.post(path, json=body, headers={"Authorization": "Bearer "}).status_code == 401
    assert c.get("/readyz").status_code == 401
    ok = c.post("/embed", json={"texts": ["a"]}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert TOKEN not in c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text


class Slow:
    """The real encoder, made slow: enough to fill the queue."""

    def __init__(self, inner, seconds):
        self.inner, self.seconds = inner, seconds
        self.name, self.dims, self.max_tokens, self.key = (inner.name, inner.dims,
                                                           inner.max_tokens, inner.key)
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


def test_an_oversized_body_is_refused_unread(make_app, monkeypatch):
    import esrank.serve as serve

    parsed = []
    monkeypatch.setattr(serve.json, "loads", lambda *a, **k: parsed.append(1) or {})
    c = make_app(serve={"max_body_bytes": 1000}).test_client()
    r = c.post("/embed", data=b'{"texts": ["' + b"a" * 5000 + b'"]}',
               content_type="application/json")
    assert r.status_code == 413 and b"\"error\"" in r.data and parsed == []


@pytest.mark.parametrize(("path", "body", "words"), [
    ("/compare/query", {"query": "tv", "configs": ["bm25"] * 9}, "1..8 names, got 9"),
    ("/compare/query", {"query": "tv", "configs": ["x" * 201]}, "configs[0] has 201 characters"),
    ("/compare/query", {"query": "tv", "configs": ["bm25"], "size": 1000},
     "'size' must be 1..100, got 1000"),  # rejected, not clamped
    ("/compare/why", {"config": "m", "query": "  ", "doc_id": "1"}, "query[0] is empty"),
    ("/compare/why", {"config": "m", "query": "x" * 10_001, "doc_id": "1"}, "at most 10000"),
    ("/compare/why", {"config": "m" * 201, "query": "tv", "doc_id": "1"}, "at most 200"),
    ("/compare/queries", {"a": "bm25", "b": "x" * 201}, "b has 201 characters"),
    ("/search", {"query": "tv", "model": "bm25+rerank¹"}, "N in 1..100"),
    ("/search", {"query": "tv", "model": "bm25+rerank" + "9" * 5000}, "at most 200"),
    ("/search", {"query": "tv", "model": "bm25+rerank101"}, "N in 1..100"),
    ("/search", {"query": "tv", "model": ""}, "model must be a non-blank string"),
])
def test_every_limit_of_the_spec_is_a_400(make_app, path, body, words):
    r = make_app().test_client().post(path, json=body)
    assert r.status_code == 400 and words in r.json["error"], (r.status_code, r.json)


def test_the_comparison_page_with_a_token_uses_a_cookie_scheme(make_app):
    c = make_app(serve={"token": TOKEN}).test_client()
    assert c.get("/compare").status_code == 401
    assert c.get("/compare?token=wrong").status_code == 401
    r = c.get(f"/compare?token={TOKEN}")
    assert r.status_code == 303 and r.headers["Location"].endswith("/compare")
    cookie = r.headers["Set-Cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/compare").status_code == 200  # the browser now carries the cookie
    # the cookie opens the page and its API, nothing else
    assert c.get("/compare/configs").status_code == 502  # past auth: the engine is absent
    assert c.post("/embed", json={"texts": ["a"]}).status_code == 401
    c.set_cookie(COMPARE_COOKIE, "forged", path="/compare")
    assert c.get("/compare").status_code == 401


def test_every_answer_says_nosniff_and_the_page_runs_only_its_own_code(make_app):
    import base64
    import hashlib
    import re

    c = make_app(serve={"token": TOKEN, "max_body_bytes": 1000}).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    too_big = c.post("/embed", data=b"x" * 2000, content_type="application/json", headers=auth)
    page = c.get("/compare", headers=auth)
    answers = [c.get("/healthz"), c.post("/embed", json={"texts": ["a"]}),  # 401
               c.get("/embed", headers=auth), c.get("/nowhere", headers=auth),  # 405, 404
               too_big, page]
    assert all(r.headers["X-Content-Type-Options"] == "nosniff" for r in answers)
    assert too_big.status_code == 413 and too_big.json == {
        "error": "the request body is over the limit of 1,000 bytes "
                 "(ESRANK_SERVE__MAX_BODY_BYTES)"}
    assert page.status_code == 200 and page.headers["X-Frame-Options"] == "DENY"
    policy = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"]
                  .split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'"
    for tag in ("script", "style"):  # each inline block by its hash, nothing else
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page.text, re.DOTALL)
        assert blocks and policy[f"{tag}-src"].split() == [
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in blocks]
    # no inline style or handler attributes, which a hash cannot allow
    assert not re.search(r"\sstyle=|\son[a-z]+=", page.text)


def test_the_token_is_compared_in_constant_time(make_app, monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    c = make_app(serve={"token": TOKEN}).test_client()
    assert c.post("/embed", json={"texts": ["a"]},
                  headers={"Authorization": f"Bearer {TOKEN[:-1]}X"}).status_code == 401
    assert compared


def test_an_encoder_that_does_not_answer_in_time_is_a_504(make_app, sidecar_encoder):
    app = make_app(encoder=Slow(sidecar_encoder, 1.0),
                   serve={"embed_timeout": 0.2, "max_batch": 1, "max_wait_us": 0})
    r = app.test_client().post("/embed", json={"texts": ["slow"]})
    assert r.status_code == 504 and r.headers["Retry-After"] == "1"


def test_credentials_in_the_engine_url_never_show(make_app):
    c = make_app(url="http://elastic:hunter2@127.0.0.1:9").test_client()
    for r in (c.get("/readyz"), c.post("/search", json={"query": "tv", "model": "bm25"})):
        assert r.status_code in (502, 503) and "127.0.0.1:9" in r.text
        assert "hunter2" not in r.text and "elastic:***@" in r.text


def test_malformed_configuration_names_on_the_comparison_routes_are_400(make_app):
    c = make_app().test_client()
    for body in ({"query": "tv", "configs": ["bm25+rerank²"]},
                 {"query": "tv", "configs": ["bm25", "x+rerank0"]}):
        r = c.post("/compare/query", json=body)
        assert r.status_code == 400 and "N in 1..100" in r.json["error"], r.json
    r = c.post("/compare/why", json={"config": "m+rerank" + "1" * 150, "query": "tv",
                                     "doc_id": "1"})
    assert r.status_code == 400 and "N in 1..100" in r.json["error"]


def test_the_queue_is_bounded_by_texts_and_gives_up_on_abandoned_requests(sidecar_encoder):
    from esrank.serve.batcher import Batcher, QueueFullError

    encoded = []

    class Counting(Slow):
        def encode(self, texts, batch_size=64):
            encoded.extend(texts)
            return super().encode(texts, batch_size)

    batcher = Batcher(Counting(sidecar_encoder, 0.4), max_batch=1, max_wait_us=0,
                      max_queue=100, max_queue_texts=3)
    busy = threading.Thread(target=batcher.encode, args=(["first"],))
    busy.start()
    time.sleep(0.1)  # "first" is being encoded; the queue is empty
    with pytest.raises(QueueFullError):  # one request, four texts: over the text bound
        batcher.encode(["a", "b", "c", "d"])
    with pytest.raises(TimeoutError):  # its caller stops waiting while it is queued
        batcher.encode(["abandoned"], timeout=0.1)
    busy.join()
    assert batcher.encode(["after"]).shape == (1, sidecar_encoder.dims)
    assert "abandoned" not in encoded and batcher.stats.dropped == 1
    assert encoded == ["first", "after"]


class Recording(Slow):
    """Slow, and records each batch it encodes."""

    def __init__(self, inner, seconds):
        super().__init__(inner, seconds)
        self.batches: list[list[str]] = []

    def encode(self, texts, batch_size=64):
        self.batches.append(list(texts))
        return super().encode(texts, batch_size)


def test_a_large_request_is_spread_over_bounded_batches_and_a_query_goes_first(
        sidecar_encoder):
    from esrank.serve.batcher import Batcher

    recording = Recording(sidecar_encoder, 0.2)
    long = "wireless noise cancelling headphones " * 200  # cut at the model's 256 tokens
    batcher = Batcher(recording, max_batch=4, token_budget=600)
    texts = [f"{i} {long}" for i in range(10)]
    big = []
    thread = threading.Thread(target=lambda: big.append(batcher.encode(texts)))
    thread.start()
    time.sleep(0.1)  # the first batch of the large request is being encoded
    query = batcher.encode(["bluetooth speaker"])
    thread.join()
    # at most 2 long texts (2 x 256 tokens) per batch; the query rode in the second batch
    assert [len(b) for b in recording.batches] == [2, 3, 2, 2, 2]
    assert recording.batches[1][0] == "bluetooth speaker"
    assert np.allclose(big[0], sidecar_encoder.encode(texts), atol=1e-5)
    assert np.allclose(query, sidecar_encoder.encode(["bluetooth speaker"]), atol=1e-5)


def test_an_abandoned_large_request_stops_being_encoded(sidecar_encoder):
    from esrank.serve.batcher import Batcher

    recording = Recording(sidecar_encoder, 0.2)
    batcher = Batcher(recording, max_batch=2)
    with pytest.raises(TimeoutError):
        batcher.encode([f"text {i}" for i in range(20)], timeout=0.3)
    assert batcher.encode(["after"]).shape == (1, sidecar_encoder.dims)
    encoded = sum(len(b) for b in recording.batches)
    assert encoded < 10 and recording.batches[-1] == ["after"]
    assert batcher.stats.dropped == 1 and batcher.depth == 0


@pytest.fixture()
def deltas(monkeypatch):
    """The page's evaluation of A and B counted, answering at once or (`gate` set) when let
    through."""
    import esrank.evaluation.page
    from esrank.evaluation.evaluate import EvaluationRun
    from esrank.judgments.metrics import METRICS, Evaluation

    calls, entered, gate = [], threading.Event(), []

    def fake(app, judgments, configs, **kw):
        calls.append(tuple(configs))
        entered.set()
        if gate:
            assert gate[0].wait(10)
        a, b = (Evaluation(dict.fromkeys(METRICS, v), {"laptop": dict.fromkeys(METRICS, v)})
                for v in (0.5, 0.25))
        top = {"ndcg@10": 0.75, "ndcg@10_condensed": 0.75}
        return EvaluationRun({configs[0]: a, configs[1]: b}, {}, ceilings={
            c: {"candidates": "bm25@100", "ceiling@10": top, "gap_closed": {
                m: (ev.mean[m] - 0.5) / 0.25 for m in top}}
            for c, ev in ((configs[0], a), (configs[1], b))})

    monkeypatch.setattr(esrank.evaluation.page, "evaluate", fake)
    return {"calls": calls, "entered": entered, "gate": gate}


# judgments to compare on; a flavor, so no request asks the (absent) engine which it is
JUDGED = {"judgments": SPEC.parents[2] / "tests" / "data" / "judgments" / "small.csv",
          "flavor": "opensearch"}


def test_a_comparison_is_reused_for_the_same_pair(make_app, deltas):
    c = make_app(**JUDGED).test_client()
    for pair in ({"a": "bm25", "b": "bm25-title"}, {"a": "bm25", "b": "bm25-title"},
                 {"a": "bm25-title", "b": "bm25"}):
        r = c.post("/compare/queries", json=pair)
        assert r.status_code == 200 and r.json["queries"][0]["delta"] == -0.25
        # each side's mean beside its candidates' ceiling and the BM25 -> ceiling gap closed
        b = r.json["configs"][pair["b"]]
        assert b["ndcg@10"] == 0.25 and b["ceiling@10"]["ndcg@10"] == 0.75
        assert b["candidates"] == "bm25@100" and b["gap_closed"]["ndcg@10"] == -1.0
    assert deltas["calls"] == [("bm25", "bm25-title"), ("bm25-title", "bm25")]
    uncached = make_app(serve={"compare_refresh": 0}, **JUDGED).test_client()
    for _ in range(2):
        uncached.post("/compare/queries", json={"a": "bm25", "b": "bm25-title"})
    assert len(deltas["calls"]) == 4


def test_one_comparison_runs_at_a_time_the_others_get_a_503(make_app, deltas):
    app = make_app(**JUDGED)
    deltas["gate"].append(threading.Event())
    first = []
    running = threading.Thread(target=lambda: first.append(app.test_client().post(
        "/compare/queries", json={"a": "bm25", "b": "bm25-title"})))
    running.start()
    assert deltas["entered"].wait(10)
    for pair in ({"a": "bm25", "b": "bm25-title"}, {"a": "bm25-title", "b": "bm25"}):
        busy = app.test_client().post("/compare/queries", json=pair)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "3"
        assert "another /compare/queries comparison is running" in busy.json["error"]
    deltas["gate"][0].set()
    running.join(10)
    assert first[0].status_code == 200
    after = app.test_client().post("/compare/queries", json={"a": "bm25-title", "b": "bm25"})
    assert after.status_code == 200 and len(deltas["calls"]) == 2
