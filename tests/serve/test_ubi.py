"""The sidecar's UBI side without a real engine: /events validation and verification (a
stand-in engine serves the pages and holds one stored query), the off switch, and the
background writer's queue (bounded, dropping and counting, never blocking a request)."""

from __future__ import annotations

import json
import threading

import pytest
from support.fakes import FakeTransport, msearch_answering

from esrank.engine.base import Engine
from esrank.serve.ubi_writer import UbiWriter
from esrank.serve.verify import ServedQueries
from esrank.ubi.log import UbiEvent, UbiQuery

CLICK = {"action": "click", "query_id": "q1", "doc_id": "d1", "position": 2}
PAGE = ("d1", "d2", "d3")  # what every /search shows
# a query another sidecar served: in the engine's ubi_queries, not in this one's memory
STORED = {"query_id": "stored", "user_query": "tv", "application": "esrank",
          "timestamp": "2026-12-01T00:00:00.000Z", "query_response_hit_ids": ["d7"]}


class Shop:
    """A sidecar over a stand-in engine: what it looked up in ubi_queries and wrote."""

    def __init__(self, make_app):
        self.lookups: list[list[str]] = []
        self.bulks: list[str] = []
        hits = [{"_id": d, "_score": 3.0 - i, "_source": {"title": d}}
                for i, d in enumerate(PAGE)]
        transport = FakeTransport({
            ("POST", "/_msearch"): msearch_answering({"hits": {"hits": hits}}),
            ("POST", "/ubi_queries/_mget"): self._mget,
            ("GET", "/ubi_queries/_settings"): {"ubi_queries": {}},
            ("GET", "/ubi_events/_settings"): {"ubi_events": {}},
            ("POST", "/_bulk"): lambda body: self.bulks.append(body) or {"items": []}})
        self.app = make_app(engine=Engine(transport))
        self.client = self.app.test_client()

    def _mget(self, body):
        self.lookups.append(body["ids"])
        return {"docs": [{"_id": i, "found": True, "_source": STORED} if i == "stored"
                         else {"_id": i, "found": False} for i in body["ids"]]}

    def search(self) -> str:
        answer = self.client.post("/search", json={"query": "tv", "model": "bm25"})
        assert answer.status_code == 200, answer.json
        assert [h["doc_id"] for h in answer.json["hits"]] == list(PAGE)
        return answer.json["query_id"]

    def post(self, events: list[dict]):
        return self.client.post("/events", json={"events": events})

    def written(self) -> list[tuple[str, str, str]]:
        """(action, query id, doc id) of every event but the impressions that went to
        ubi_events."""
        assert self.app.extensions["esrank"].ubi.flush(5)
        lines = [json.loads(x) for body in self.bulks for x in body.splitlines()]
        return [(doc["action_name"], doc["query_id"],
                 doc["event_attributes"]["object"]["object_id"])
                for head, doc in zip(lines[::2], lines[1::2], strict=True)
                if head["index"]["_index"] == "ubi_events" and doc["action_name"] != "impression"]


@pytest.fixture()
def shop(make_app):
    shop = Shop(make_app)
    yield shop
    shop.app.extensions["esrank"].ubi.close()


@pytest.mark.parametrize("events,words", [
    ([], "1..100 events"),
    ([CLICK] * 101, "1..100 events"),
    (["click"], "events[0] must be an object"),
    ([{**CLICK, "price": 3}], "unknown field(s) ['price']"),
    ([{"action": "click", "doc_id": "d1"}], "events[0].query_id is required"),
    ([{**CLICK, "action": " "}], "events[0].action must be a non-blank string"),
    ([{**CLICK, "position": 0}], "position must be an integer in 1..10000"),
    ([{**CLICK, "position": True}], "position must be an integer"),
    ([{**CLICK, "position": None}], "position must be an integer"),
    ([{**CLICK, "user_id": ""}], "events[0].user_id must be a non-blank string"),
])
def test_bad_events_name_the_field(client, events, words):
    r = client.post("/events", json={"events": events})
    assert r.status_code == 400 and words in r.json["error"], r.json


@pytest.mark.parametrize("action,words", [
    ("wishlist", "action 'wishlist' is not one of click, add_to_cart, purchase"),
    ("<img src=x onerror=alert(1)>", "is not one of click, add_to_cart, purchase"),
    ("impression", "the sidecar records the impressions of each page /search serves"),
])
def test_only_the_actions_the_click_models_weigh_are_accepted(shop, action, words):
    query_id = shop.search()
    r = shop.post([{"action": action, "query_id": query_id, "doc_id": "d1", "position": 1}])
    assert r.status_code == 422 and words in r.json["error"], r.json
    assert [x["index"] for x in r.json["rejected"]] == [0]
    assert words in r.json["rejected"][0]["reason"]
    assert shop.written() == []


def test_an_event_needs_a_query_this_sidecar_served(shop):
    r = shop.post([{"action": "purchase", "query_id": "never-served", "doc_id": "d1"}])
    assert r.status_code == 422, r.json
    assert "query_id 'never-served' is not a search this sidecar served" in r.json["error"]
    assert shop.lookups == [["never-served"]]  # the engine's ubi_queries was asked, once
    assert shop.written() == []


def test_an_event_needs_a_doc_that_query_showed(shop):
    query_id = shop.search()
    r = shop.post([{"action": "purchase", "query_id": query_id, "doc_id": "d9"}])
    assert r.status_code == 422, r.json
    assert f"doc_id 'd9' is not among the 3 results query {query_id!r} showed" in r.json["error"]
    assert shop.lookups == []  # the sidecar remembered the page it served
    assert shop.written() == []


def test_a_shown_doc_of_a_served_query_is_accepted_and_written(shop):
    query_id = shop.search()
    r = shop.post([{"action": "click", "query_id": query_id, "doc_id": "d2", "position": 2},
                   {"action": "purchase", "query_id": query_id, "doc_id": "d2"}])
    assert r.status_code == 202 and r.json == {"accepted": 2, "dropped": 0, "rejected": []}
    assert shop.written() == [("click", query_id, "d2"), ("purchase", query_id, "d2")]


def test_a_mixed_batch_is_accepted_with_each_refusal_named(shop):
    query_id = shop.search()
    r = shop.post([{"action": "click", "query_id": query_id, "doc_id": "d1"},
                   {"action": "impression", "query_id": query_id, "doc_id": "d1"},
                   {"action": "purchase", "query_id": "forged", "doc_id": "d1"},
                   {"action": "add_to_cart", "query_id": "stored", "doc_id": "d7"},
                   {"action": "purchase", "query_id": query_id, "doc_id": "d9"},
                   {"action": "purchase", "query_id": "forged-too", "doc_id": "d2"}])
    assert r.status_code == 202 and (r.json["accepted"], r.json["dropped"]) == (2, 0)
    reasons = {x["index"]: x["reason"] for x in r.json["rejected"]}
    assert list(reasons) == [1, 2, 4, 5]
    assert "impression" in reasons[1] and "'forged' is not a search" in reasons[2]
    assert "'d9' is not among" in reasons[4] and "'forged-too' is not a search" in reasons[5]
    # one engine lookup for the query ids the sidecar did not remember, never one per event
    assert shop.lookups == [["forged", "stored", "forged-too"]]
    assert shop.written() == [("click", query_id, "d1"), ("add_to_cart", "stored", "d7")]
    assert "esrank_events_rejected_total 4.0" in shop.client.get("/metrics").text
    # a query found in the engine is remembered: no second lookup
    again = shop.post([{"action": "purchase", "query_id": "stored", "doc_id": "d7"}])
    assert again.status_code == 202 and len(shop.lookups) == 1


def test_events_that_need_an_engine_lookup_fail_with_the_engine(client):
    r = client.post("/events", json={"events": [CLICK]})  # the engine (port 9) is unreachable
    assert r.status_code == 502 and "cannot reach" in r.json["error"], r.json


def test_served_queries_forget_the_least_recently_used_beyond_their_bound():
    served = ServedQueries(max_docs=4)
    served.add("a", ["1", "2"])
    served.add("b", ["3"])
    assert served.get("a") == ("1", "2")  # used: "b" is now the oldest
    served.add("c", ["4", "5"])  # 5 doc ids: "b" goes
    assert served.get("b") is None and served.get("a") == ("1", "2")
    served.add("a", ["1"])  # replaced, not added twice: 3 doc ids
    served.add("d", ["6"])
    assert [served.get(q) for q in "acd"] == [("1",), ("4", "5"), ("6",)]


@pytest.mark.parametrize("shopper,words", [
    ("u1", "field 'shopper' must be dict"),
    ({"user_id": None}, "shopper.user_id must be a non-blank string"),
    ({"age": 30}, "unknown field(s) ['age']"),
    ({"brands": ["HP"] * 21}, "at most 20"),
    ({"price_band": [1]}, "price band [1.0]"),
    ({"price_band": None}, "shopper.price_band must be [low, high]"),
])
def test_bad_shoppers_name_the_field(client, shopper, words):
    r = client.post("/search", json={"query": "tv", "shopper": shopper})
    assert r.status_code == 400 and words in r.json["error"], r.json


def test_events_need_ubi_recording_on(make_app):
    off = make_app(serve={"ubi": False}).test_client()
    r = off.post("/events", json={"events": [CLICK]})
    assert r.status_code == 501 and "ESRANK_SERVE__UBI" in r.json["error"]


def test_the_writer_sends_in_bulk_and_counts_what_it_drops():
    sent: list[tuple[int, int]] = []
    gate = threading.Event()

    def send(queries, events):
        gate.wait(5)
        sent.append((len(queries), len(events)))
        return len(queries) + len(events)

    dropped = []
    writer = UbiWriter(send, max_queue=3, batch=10, interval=0.05, on_drop=dropped.append)
    records = [UbiQuery("q", "tv"), *(UbiEvent("impression", "q", f"d{i}", i) for i in (1, 2))]
    assert writer.put(records) == 3
    # the queue holds 3: while the send is stuck, more is dropped, never waited for
    writer.put([UbiEvent("click", "q", "d1", 1)] * 5)
    gate.set()
    assert writer.flush(5)
    assert sum(q + e for q, e in sent) + sum(dropped) == 8
    assert sum(dropped) >= 2
    writer.close()


def test_a_failing_engine_drops_the_batch_and_keeps_going():
    calls = []

    def send(queries, events):
        calls.append(len(events))
        if len(calls) == 1:
            raise ConnectionError("engine down")
        return len(events)

    dropped = []
    writer = UbiWriter(send, interval=0.05, on_drop=dropped.append)
    writer.put([UbiEvent("click", "q", "d1", 1)])
    assert writer.flush(5)
    writer.put([UbiEvent("click", "q", "d2", 1)])
    assert writer.flush(5)
    assert dropped == [1] and calls == [1, 1]
    writer.close()


def test_searches_within_an_interval_go_in_one_bulk():
    """One send per interval, not one per search: the engine indexes in the background of
    the searches it serves."""
    import time

    sent = []
    writer = UbiWriter(lambda q, e: sent.append((len(q), len(e))) or 0, interval=1.0)
    for i in range(5):  # five searches, 10 ms apart, each a query and two impressions
        writer.put([UbiQuery(f"q{i}", "tv"), UbiEvent("impression", f"q{i}", "d1", 1),
                    UbiEvent("impression", f"q{i}", "d2", 2)])
        time.sleep(0.01)
    assert writer.flush(5)
    assert sent == [(5, 10)]
    writer.close()
