"""The sidecar's UBI side without an engine: /events validation, the off switch, and the
background writer's queue (bounded, dropping and counting, never blocking a request)."""

from __future__ import annotations

import threading

import pytest

from esrank.serve.ubi_writer import UbiWriter
from esrank.ubi import UbiEvent, UbiQuery

CLICK = {"action": "click", "query_id": "q1", "doc_id": "d1", "position": 2}


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
