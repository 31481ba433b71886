"""Personalisation on simulated shoppers (esrank.personal.sim), end to end through the sidecar's
HTTP
API and the engine's UBI indices. Writes bench/results/personalisation.json.

    python bench/personalisation.py [--flavor elasticsearch] [--shoppers 200] [--seed 7]

Needs the Chorus catalogue indexed (make demo). Steps, all on the local engine (--flavor):
1. the non-personal model: the Chorus human judgments logged with chorus_personal (the shopper
   features missing), trained without them, deployed and made active for chorus_personal;
2. shoppers A and B (disjoint, hidden tastes) search `--history` times each through the
   sidecar and act on the pages; profiles are built from those UBI events;
3. shoppers A search `--train` more times (the shopper params of each page recorded by the
   sidecar); their sessions become the training data of the personal trees, learned on top
   of the non-personal model (`esrank log --sessions`, `esrank train --personal --base`);
4. shoppers B (never trained on) search `--eval` times each: both models rank the same
   query for the same shopper; utility NDCG@10 (human grade x the shopper's hidden taste) per
   (shopper, query), paired tests;
5. anonymous shoppers: both models over the Chorus human judgments (NDCG@10 standard and
   condensed), the same by construction;
6. an interleaving experiment (non-personal vs personal) served by the sidecar to shoppers B
   until --interleave sessions: the report, and after how many sessions the sign test first
   reached p < 0.05 and stayed there.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from _chorus import FEATURE_SETS, JUDGMENTS, catalogue_documents
from _report import engine_options, result_path, write_result
from sidecar import start_server

from esrank.app import App, load_encoder
from esrank.catalogue.lookup import ProductFacts
from esrank.catalogue.recall import Recall
from esrank.core.settings import ExperimentSettings, load_settings
from esrank.deploy.upload import upload
from esrank.evaluation.evaluate import evaluate
from esrank.evaluation.significance import compare
from esrank.features.parser import load_feature_set
from esrank.judgments.clicks import session_judgments, sessions_of
from esrank.judgments.metrics import Evaluation
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments, log_table
from esrank.learn.table import read_table, write_table
from esrank.learn.train import TrainParams, train
from esrank.personal.experiment import Experiment, report, sign_test
from esrank.personal.shopper import build_profiles, save_profiles
from esrank.personal.sim import INTEREST_SHARE, make_shoppers, shop, utility_ndcg
from esrank.ubi.indices import fetch

FEATURE_SET = FEATURE_SETS / "chorus_personal.yaml"
METRIC = "utility_ndcg@10"


def poster(port: int):
    def post(path: str, body: dict) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read())
        conn.close()
        if response.status >= 300:
            raise SystemExit(f"sidecar answered {response.status} to {path}: {data}")
        return data
    return post


def catalogue_facts() -> dict[str, ProductFacts]:
    return {doc_id: ProductFacts(doc.get("supplier"), doc.get("price"))
            for doc_id, doc in catalogue_documents()}


def judged_grades() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(JUDGMENTS) as f:
        for row in csv.DictReader(f):
            out.setdefault(row["query"], {})[row["docid"]] = int(row["rating"])
    return out


def phase(post, shoppers, per_shopper, queries, judged, facts, rng, share, **kw) -> set[str]:
    """Each shopper searches `per_shopper` queries and acts; the query ids served."""
    ids = set()
    for shopper in shoppers:
        for _ in range(per_shopper):
            query = shopper.pick_query(queries, rng, share)
            answer = shop(post, shopper, query, judged[query], facts, rng, **kw)
            ids.add(answer["query_id"])
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shoppers", type=int, default=200, help="In each of A and B.")
    ap.add_argument("--history", type=int, default=6, help="Searches per shopper before "
                                                            "profiles are built.")
    ap.add_argument("--train", type=int, default=10, help="Searches per A shopper to train on.")
    ap.add_argument("--eval", type=int, default=8, help="Queries per B shopper evaluated.")
    ap.add_argument("--interleave", type=int, default=2000, help="Interleaved sessions.")
    ap.add_argument("--interest-share", type=float, default=INTEREST_SHARE,
                    help="Share of a shopper's searches drawn from their interests (0: every "
                         "search a random Chorus query).")
    ap.add_argument("--seed", type=int, default=7)
    engine_options(ap)
    ap.add_argument("--out", type=Path, help="Default: bench/results/personalisation"
                                             "[_elasticsearch].json.")
    args = ap.parse_args()
    started = time.monotonic()
    rng = random.Random(args.seed)
    run = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp(prefix="esrank-personal-"))
    settings = load_settings(url=args.url, flavor=args.flavor, active_set="chorus_personal",
                             profiles_index=f"bench-profiles-{run}")
    app = App(settings)
    engine, fs = app.engine, load_feature_set(FEATURE_SET)
    personal_features = list(fs.personal_features)
    judged, facts = judged_grades(), catalogue_facts()
    queries = sorted(judged)
    timings: dict[str, float] = {}

    # 1. the non-personal model, on the human judgments
    t = time.monotonic()
    # over BM25 alone, as the sessions below are logged: personal trees rank their base's
    human = log_table(app, JUDGMENTS, FEATURE_SET, tmp / "human.parquet", knn=0,
                      progress=False)
    params = TrainParams(eta=0.1, num_rounds=100)
    train(read_table(human.table), tmp / "base", params=params, search=False,
          exclude=personal_features, table=str(human.table))
    _, base_report = upload(app, tmp / "base", FEATURE_SET)
    base_name = base_report.model
    timings["base_model_s"] = round(time.monotonic() - t, 1)

    # 2. history -> profiles
    t = time.monotonic()
    port = start_server(app_with(settings), threads=8)
    post = poster(port)
    group_a = make_shoppers(args.shoppers, facts, judged, prefix=f"A{run}-", seed=args.seed)
    group_b = make_shoppers(args.shoppers, facts, judged, prefix=f"B{run}-",
                            seed=args.seed + 1)
    history = phase(post, group_a + group_b, args.history, queries, judged, facts, rng,
                    args.interest_share, model=base_name)
    time.sleep(1.5)  # the sidecar's UBI writer sends every 0.5 s
    shown, events = fetch(engine)
    users = {s.user_id for s in group_a + group_b}
    mine = [e for e in events if e.client_id in users and e.query_id in history]
    profiles = build_profiles(shown, mine, facts, now=time.time())
    save_profiles(engine, profiles.values(), settings.profiles_index)
    timings["history_s"] = round(time.monotonic() - t, 1)

    # 3. training traffic from A, served by the non-personal model with their profiles
    t = time.monotonic()
    served = phase(post, group_a, args.train, queries, judged, facts, rng,
                   args.interest_share, model=base_name)
    time.sleep(1.5)
    sessions = [s for s in sessions_of(*fetch(engine)) if s.query_id in served]
    judgments = session_judgments(sessions)
    shoppers = {s.query_id: s.attributes.get("shopper") or {} for s in sessions}
    logged = log_judgments(engine, settings.index, fs, judgments, app.encoder, recall=Recall(20),
                           progress=False, shoppers=shoppers)
    write_table(logged.matrix, tmp / "sessions.parquet")
    personal = train(logged.matrix, tmp / "personal", params=params, search=False,
                     personal=personal_features, base=ModelArtifact.load(tmp / "base"),
                     table=str(tmp / "sessions.parquet"))
    _, personal_report = upload(app, tmp / "personal", FEATURE_SET,
                                table=tmp / "sessions.parquet")
    personal_name = personal_report.model
    timings["train_personal_s"] = round(time.monotonic() - t, 1)

    # 4. shoppers B: both models, the same (shopper, query)
    t = time.monotonic()
    per = {base_name: {}, personal_name: {}}
    for shopper in group_b:
        for query in {shopper.pick_query(queries, rng, args.interest_share)
                      for _ in range(args.eval)}:
            for model in per:
                answer = post("/search", {"query": query, "model": model,
                                          "shopper": {"user_id": shopper.user_id}})
                score = utility_ndcg(shopper, [h["doc_id"] for h in answer["hits"]],
                                     judged[query], facts)
                if score is not None:
                    per[model][f"{shopper.user_id}|{query}"] = {METRIC: score}
    evaluations = {m: Evaluation({METRIC: sum(v[METRIC] for v in pq.values()) / len(pq)}, pq)
                   for m, pq in per.items()}
    utility = compare((base_name, evaluations[base_name]),
                      (personal_name, evaluations[personal_name]), (METRIC,)).to_dict()
    timings["evaluate_b_s"] = round(time.monotonic() - t, 1)

    # 5. anonymous shoppers on the human judgments
    evaluation = evaluate(app, JUDGMENTS, [base_name, personal_name]).results
    anonymous = compare((base_name, evaluation[base_name]),
                        (personal_name, evaluation[personal_name]),
                        ("ndcg@10", "ndcg@10_condensed")).to_dict()

    # 6. interleaving served by the sidecar's experiment
    t = time.monotonic()
    experiment = Experiment(f"personal-{run}", base_name, personal_name, "interleave")
    port2 = start_server(app_with(settings.model_copy(update={"serve": settings.serve.model_copy(
        update={"experiment": ExperimentSettings(name=experiment.name, control=base_name,
                                                 treatment=personal_name)})})), threads=8)
    post2 = poster(port2)
    order = []
    while len(order) < args.interleave:
        shopper = rng.choice(group_b)
        query = shopper.pick_query(queries, rng, args.interest_share)
        order.append(shop(post2, shopper, query, judged[query], facts, rng)["query_id"])
    time.sleep(1.5)
    by_id = {s.query_id: s for s in sessions_of(*fetch(engine))}
    played = [by_id[q] for q in order if q in by_id]
    result = report(experiment, played)
    first_significant = None
    wins = {"control": 0, "treatment": 0}
    for n, session in enumerate(played, 1):
        step = report(experiment, [session]).wins
        for arm in wins:
            wins[arm] += step[arm]
        decided = wins["control"] + wins["treatment"]
        p = sign_test(wins["treatment"], decided)
        if p < 0.05 and first_significant is None:
            first_significant = n
        elif p >= 0.05:
            first_significant = None
    timings["interleave_s"] = round(time.monotonic() - t, 1)

    out = {
        "shoppers": {"A_train": len(group_a), "B_eval": len(group_b),
                     "history_searches": len(history), "profiles": len(profiles)},
        "models": {"non_personal": base_name, "personal": personal_name,
                   "parity_max_delta": {"non_personal": base_report.parity.max_delta,
                                        "personal": personal_report.parity.max_delta}},
        "training": {"sessions": len(served), "acted_sessions": len({j.qid for j in judgments}),
                     "rows": len(logged.matrix), "cv": personal.cv.to_dict()},
        "utility_ndcg10_shoppers_B": utility,
        "anonymous_human_judgments": anonymous,
        "interleaving": {**result.to_dict()["interleaving"], "sessions": len(played),
                         "significant_from_session": first_significant},
        "timings": timings, "seconds": round(time.monotonic() - started, 1),
        "simulator": "esrank/sim.py (assumptions in docs/personalisation.md)",
        "seed": args.seed, "interest_share": args.interest_share, "engine": args.flavor,
    }
    write_result(out, args.out or result_path("personalisation", args))


def app_with(settings):
    """The sidecar; it reads each shopper's profile per request, since the profiles are built
    mid-run: a cached "no profile yet" from the history phase (ESRANK_SERVE__PROFILE_REFRESH,
    60 s) would hide them from the training phase on a machine fast enough to start it within
    the minute."""
    from esrank.serve import create_app

    settings = settings.model_copy(update={"serve": settings.serve.model_copy(
        update={"profile_refresh": 0.0})})
    return create_app(settings, encoder=load_encoder(settings, cached=True))


if __name__ == "__main__":
    main()
