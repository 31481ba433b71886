"""Real-time profiles (esrank.personal.live) on the live Chorus `products` index, in figures.

1. event -> search: while the reliability bench's search load runs (bench/reliability.py
   `_search_load`: 4 clients of unique searches), --probes new shoppers each search with
   `features: true`, add a hit to the cart (POST /events, 202) and search again at once,
   until a search logs the personal feature `shopper_brand` = 1.0 on that product: the time
   from the 202 to that search's answer (p50/p99; target p99 <= 1 s) and how many searches
   it took. Then the same with the searches sent to a second sidecar that shares only the
   profile store (reading it on every request, ESRANK_SERVE__PROFILE_REFRESH=0): the
   write-behind's delay;
2. per-event cost: POST /events of one event each, alternately to a sidecar with live
   profiles and one without (ESRANK_SERVE__LIVE_PROFILES=false), nothing else running:
   p50/mean per request and the ratio; and `LiveProfiles.record` alone per action;
3. incremental vs batch: --shoppers simulated shoppers (esrank.personal.sim, as
   bench/personalisation.py) search and act through the live sidecar; their profiles as it
   stored them against `build_profiles` over their UBI events at the same `now`.

The model: a private copy of feature_sets/chorus_personal.yaml (`rtbenchXXXXXX`), trained on the
Chorus judgments over the BM25 top 20 with its personal features in (missing when logged:
it ranks as without them, and /search logs them: how a search shows it read the profile).
Writes bench/results/realtime_profiles[_elasticsearch].json.

    python bench/realtime_profiles.py [--flavor elasticsearch] [--probes 200] [--seconds 90]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from _chorus import FEATURE_SETS, JUDGMENTS, private_feature_set, remove_deployed
from _report import configured_encoder, engine_options, result_path, write_result
from personalisation import catalogue_facts, judged_grades, poster
from reliability import _search_load
from sidecar import start_server

from esrank.app import connect_engine
from esrank.catalogue.lookup import product_facts
from esrank.catalogue.recall import Recall
from esrank.core.settings import load_settings
from esrank.deploy.upload import deploy
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_csv
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import write_table
from esrank.learn.train import TrainParams, train
from esrank.personal.shopper import build_profiles, load_profile
from esrank.personal.sim import make_shoppers, shop
from esrank.serve import create_app
from esrank.ubi.indices import fetch
from esrank.ubi.log import UbiEvent

SET, WINDOW = f"rtbench{uuid.uuid4().hex[:6]}", 20
GIVE_UP = 10.0  # seconds a probe searches for its cart add before counting it as missed


def model(engine, encoder, tmp: Path) -> str:
    """The private personal set's model, deployed and active; its name."""
    fs = private_feature_set(engine, load_feature_set(FEATURE_SETS / "chorus_personal.yaml"),
                             SET)
    table = log_judgments(engine, "products", fs, read_csv(JUDGMENTS), encoder,
                          recall=Recall(WINDOW), progress=False).matrix
    write_table(table, tmp / "t.parquet")
    train(table, tmp / "m", search=False, device="cpu", params=TrainParams(num_rounds=20),
          table=str(tmp / "t.parquet"))
    return deploy(engine, "products", ModelArtifact.load(tmp / "m"), fs, table.docs_by_query(),
                  query_params(fs.params, encoder)).model


class Client:
    """One kept-alive connection to a sidecar: post(path, body) -> (status, answer)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")


def probe(shopper: Client, searcher: Client, query: str) -> tuple[float, int] | None:
    """A new shopper searches, adds a branded hit to the cart, and searches (on `searcher`)
    until the page logs that brand's affinity: (ms from the 202, searches; inf when none did
    within GIVE_UP seconds), None when the page had no branded hit."""
    body = {"query": query, "size": 10, "features": True,
            "shopper": {"user_id": f"rt-{uuid.uuid4().hex[:10]}"}}
    _, first = shopper.post("/search", body)
    hit = next(((r, h) for r, h in enumerate(first.get("hits", []), 1) if h["supplier"]), None)
    if hit is None:
        return None
    rank, doc = hit[0], hit[1]["doc_id"]
    status, _ = shopper.post("/events", {"events": [{
        "action": "add_to_cart", "query_id": first["query_id"], "doc_id": doc,
        "position": rank, "user_id": body["shopper"]["user_id"]}]})
    accepted = time.perf_counter()
    if status != 202:
        raise SystemExit(f"/events answered {status}")
    n = 0
    while time.perf_counter() - accepted < GIVE_UP:
        n += 1
        _, page = searcher.post("/search", body)
        if page.get("features", {}).get(doc, {}).get("shopper_brand") == 1.0:
            return (time.perf_counter() - accepted) * 1e3, n
    return float("inf"), n


def event_to_search(port: int, other: int, queries: list[str], probes: int,
                    seconds: float) -> dict:
    """Probes during the search load, on the same sidecar and across two."""
    load: dict = {}
    runner = threading.Thread(target=lambda: load.update(_search_load(port, seconds, None)))
    runner.start()
    rows: dict[str, list[tuple[float, int]]] = {"same_sidecar": [], "other_sidecar": []}
    a, b = Client(port), Client(other)
    i = 0
    while runner.is_alive() and len(rows["other_sidecar"]) < probes:
        query = queries[i % len(queries)]
        for name, searcher in (("same_sidecar", a), ("other_sidecar", b)):
            found = probe(a, searcher, query)
            if found is not None:
                rows[name].append(found)
        i += 1
    runner.join()
    return {"search_load": load, **{name: summary(r) for name, r in rows.items()}}


def summary(rows: list[tuple[float, int]]) -> dict:
    """Percentiles over every probe, a missed one counting as infinitely late."""
    ms = [m for m, _ in rows]
    return {"probes": len(rows), "missed": sum(1 for m in ms if m == float("inf")),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(max(ms), 1),
            "first_search_reflected": sum(1 for _, n in rows if n == 1)}


def per_event_cost(ports: dict[str, int], queries: list[str], events: int) -> dict:
    """One-event POST /events alternately to each sidecar (live profiles on, off), each
    event by the shopper who searched the page it acts on (their profile is cached, as in
    real traffic; a product's first action reads its facts from the catalogue)."""
    clients = {name: Client(port) for name, port in ports.items()}
    pages: dict[str, list] = {name: [] for name in ports}
    k = 0
    while len(pages["off"]) < events:
        k += 1
        for name, client in clients.items():
            user = f"cost-{name}-{k % 200}"
            _, page = client.post("/search", {"query": queries[k % len(queries)], "size": 10,
                                              "shopper": {"user_id": user}})
            if not page["hits"]:
                break
            rank = 1 + k % min(5, len(page["hits"]))
            pages[name].append((page["query_id"], page["hits"][rank - 1]["doc_id"], rank,
                                user))
    ms: dict[str, list[float]] = {name: [] for name in ports}
    for k in range(events):
        for name, client in clients.items():
            qid, doc, rank, user = pages[name][k]
            started = time.perf_counter()
            status, _ = client.post("/events", {"events": [{
                "action": "click", "query_id": qid, "doc_id": doc, "position": rank,
                "user_id": user}]})
            ms[name].append((time.perf_counter() - started) * 1e3)
            if status != 202:
                raise SystemExit(f"/events answered {status}")
    out = {name: {"p50_ms": round(float(np.percentile(v, 50)), 3),
                  "p99_ms": round(float(np.percentile(v, 99)), 3),
                  "mean_ms": round(float(np.mean(v)), 3)} for name, v in ms.items()}
    out["events_each"] = events
    out["mean_ratio_live_vs_off"] = round(out["live"]["mean_ms"] / out["off"]["mean_ms"], 3)
    out["p50_ratio_live_vs_off"] = round(out["live"]["p50_ms"] / out["off"]["p50_ms"], 3)
    return out


def record_cost(live, events) -> dict:
    """`LiveProfiles.record` alone, the products' facts cached: microseconds per action."""
    live.record(events, time.time())  # warm the facts and the profiles
    started = time.perf_counter()
    for e in events:
        live.record([e], time.time())
    return {"actions": len(events),
            "us_per_action": round((time.perf_counter() - started) * 1e6 / len(events), 1)}


def equality(sidecar, port: int, engine, index: str, shoppers: int, searches: int,
             seed: int) -> dict:
    """Simulated shoppers act through the live sidecar; their stored live profiles against
    the batch build over their UBI events at the same `now`."""
    judged, facts = judged_grades(), catalogue_facts()
    rng, post = random.Random(seed), poster(port)
    group = make_shoppers(shoppers, facts, judged, prefix=f"eq{uuid.uuid4().hex[:6]}-",
                          seed=seed)
    served = set()
    for shopper in group:
        for _ in range(searches):
            query = shopper.pick_query(sorted(judged), rng, 0.7)
            served.add(shop(post, shopper, query, judged[query], facts, rng)["query_id"])
    assert sidecar.ubi.flush(30) and sidecar.profiles.flush(30)
    queries, events = fetch(engine)
    users = {s.user_id for s in group}
    mine = [e for e in events if e.client_id in users and e.query_id in served]
    now = time.time()
    batch = build_profiles(queries, mine, product_facts(
        engine, "products", {e.doc_id for e in mine if e.doc_id}), now=now)
    live = {u: load_profile(engine, u, index) for u in batch}
    brand_delta = [abs(w - dict(live[u].brands).get(b, -1.0)) for u, p in batch.items()
                   for b, w in p.brands]
    price_delta = [abs(p.price - live[u].price) / p.price for u, p in batch.items() if p.price]
    return {"shoppers": len(group), "searches": len(served),
            "actions": sum(1 for e in mine if e.action != "impression"),
            "profiles_batch": len(batch),
            "profiles_live": sum(1 for p in live.values() if p is not None),
            "same_top_brands": sum(1 for u, p in batch.items() if live[u] and [
                b for b, _ in p.brands] == [b for b, _ in live[u].brands]),
            "same_actions": sum(1 for u, p in batch.items() if live[u] and
                                p.actions == live[u].actions),
            "max_abs_brand_share_delta": max(brand_delta, default=0.0),
            "max_rel_price_delta": max(price_delta, default=0.0)}


def sidecars(settings, encoder) -> dict:
    """The sidecars: live (the one measured), other (live, reads the store per request),
    off (live profiles off); name -> (Flask app, port)."""
    out = {}
    for name, update in (("live", {}), ("other", {"profile_refresh": 0.0}),
                         ("off", {"live_profiles": False})):
        app = create_app(settings.model_copy(update={"serve": settings.serve.model_copy(
            update=update)}), encoder=encoder)
        out[name] = (app, start_server(app, threads=8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--probes", type=int, default=200, help="Cart adds timed per row.")
    ap.add_argument("--seconds", type=float, default=120.0, help="Longest the load runs.")
    ap.add_argument("--events", type=int, default=500, help="/events posts per sidecar "
                                                            "(per-event cost).")
    ap.add_argument("--shoppers", type=int, default=200, help="Simulated shoppers.")
    ap.add_argument("--searches", type=int, default=5, help="Searches per simulated shopper.")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, help="Default: bench/results/realtime_profiles"
                                             "[_elasticsearch].json.")
    args = ap.parse_args()
    started = time.monotonic()
    index = f"bench-rt-profiles-{uuid.uuid4().hex[:6]}"
    settings = load_settings(url=args.url, flavor=args.flavor, active_set=SET,
                             rescore_window=WINDOW, profiles_index=index)
    engine, encoder = connect_engine(settings), configured_encoder()
    queries = sorted({j.query for j in read_csv(JUDGMENTS)})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            deployed = model(engine, encoder, Path(tmp))
        apps = sidecars(settings, encoder)
        port = {name: p for name, (_, p) in apps.items()}
        result = {"model": deployed, "engine": args.flavor,
                  "event_to_search": event_to_search(port["live"], port["other"], queries,
                                                     args.probes, args.seconds)}
        print(result, flush=True)
        result["per_event"] = per_event_cost({"live": port["live"], "off": port["off"]},
                                             queries, args.events)
        live = apps["live"][0].extensions["esrank"]
        facts = sorted(catalogue_facts())
        rng = random.Random(args.seed)
        result["per_event"]["record_alone"] = record_cost(live.app.live, [
            UbiEvent("click", "q", rng.choice(facts), 1, f"cost-{k % 200}", None, time.time())
            for k in range(2000)])
        result["incremental_vs_batch"] = equality(live, port["live"], engine, index,
                                                  args.shoppers, args.searches, args.seed)
        for app, _ in apps.values():
            app.extensions["esrank"].close(5)
    finally:
        remove_deployed(engine, SET, [index] if engine.index_exists(index) else [])
    result["seconds"] = round(time.monotonic() - started, 1)
    write_result(result, args.out or result_path("realtime_profiles", args))


if __name__ == "__main__":
    main()
