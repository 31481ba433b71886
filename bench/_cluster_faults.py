"""The reliability bench's cluster section: one node of a local cluster SIGKILLed during a
sidecar search load, mid-index, mid-deploy and mid-log, and two deploys of one feature set at
once. Each fault kills a data node (node 1: the cluster keeps its manager), lets it stay down
a few seconds, then brings it back with `esrank engine up`, as a supervisor would; what is
live (the alias, its documents, the feature set and model in the plugin's store, the
registry's active pointer) is compared before the kill and after the node is back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from reliability import ALIAS, ROOT, SET, SLICE, WINDOW, SlowEncoder, cli_env, request
from sidecar import start_server

from esrank.app import connect_engine
from esrank.catalogue.index import index_catalogue
from esrank.catalogue.recall import Recall
from esrank.core.errors import EsrankError
from esrank.deploy.registry import entry, unregistered
from esrank.deploy.upload import deploy
from esrank.engine.local import LocalEngine, stop_node, up
from esrank.features.params import query_params
from esrank.learn.feature_log import log_judgments

VICTIM = 1  # the node killed: a data node, so the cluster keeps its manager
DOWN_S = 5.0  # how long it stays down before `up` restarts it
THINK_S = 1.0  # each search client's pause between its searches, as a shopper's


def live(engine, fs) -> dict:
    """What is live: alias, docs, feature set and active model in the store, registry."""
    active = entry(engine, SET).active
    return {"alias": engine.alias_targets(ALIAS), "docs": engine.count(ALIAS),
            "feature_set": engine.get_feature_set(fs.engine_name) is not None,
            "active": active, "active_in_store": bool(active and engine.get_model(active))}


def same_rows(matrix, baseline) -> dict:
    """How a table logged through a fault compares with one logged without: the (query, doc)
    pairs in both, in one only (BM25 ties at the window's edge may be broken in another order
    by the other shard copy), and how far apart their feature values are (the shard copies'
    cosines differ in the last bit of a float32)."""
    if matrix is None:
        return {}
    rows = {(q, d): i for i, (q, d) in enumerate(zip(matrix.qids, matrix.doc_ids, strict=True))}
    base = {(q, d): i for i, (q, d) in enumerate(zip(baseline.qids, baseline.doc_ids,
                                                     strict=True))}
    common = sorted(rows.keys() & base.keys())
    a, b = (m.values[[at[k] for k in common]] for m, at in ((matrix, rows), (baseline, base)))
    return {"rows": len(rows), "pairs_in_both": len(common),
            "pairs_in_one_only": len(rows.keys() ^ base.keys()),
            "same_missing_values": bool((np.isnan(a) == np.isnan(b)).all()),
            "max_abs_difference_on_common_pairs": float(np.nanmax(np.abs(a - b)))}


def replicas(engine) -> dict:
    """index -> the started copies of its shards (p, r) for esrank's indices and the store."""
    out: dict[str, list[str]] = {}
    for row in engine.shard_copies(f"{ALIAS}-*,esrank-*,.ltrstore*"):
        if row["state"] == "STARTED":
            out.setdefault(row["index"], []).append(row["prirep"])
    return {index: sorted(copies) for index, copies in sorted(out.items())}


def fault(cluster: LocalEngine, settings, fs, work, wait: float) -> dict:
    """Run `work` in a thread; after `wait` s kill the victim node, restart it DOWN_S s later,
    and wait for `work`: its outcome and whether anything live changed."""
    before = live(connect_engine(settings), fs)
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = work()
            outcome["completed"] = True
        except EsrankError as exc:
            outcome["failed_with"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        outcome["seconds"] = round(time.monotonic() - started, 1)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(wait)
    stop_node(cluster.node(VICTIM), kill=True)
    time.sleep(DOWN_S)
    restarted = time.monotonic()
    up(cluster, progress=False)
    rejoin_s = round(time.monotonic() - restarted, 1)
    worker.join()
    after = live(connect_engine(settings), fs)
    return {"completed": outcome.get("completed", False),
            "failed_with": outcome.get("failed_with"), "work_seconds": outcome.get("seconds"),
            "node_back_green_s": rejoin_s, "live_unchanged": before == after,
            "before": before, "after": after, "_result": outcome.get("result")}


def search_load(cluster: LocalEngine, settings, clients: int, seconds: float) -> dict:
    """`clients` shoppers searching the sidecar's /search (THINK_S between searches); the
    victim is killed after `seconds` / 3 and restarted DOWN_S later: failed (non-200) and
    degraded searches, how long they failed, p50/p99 before, during the fault (kill to green)
    and after."""
    from esrank.serve import create_app

    app = create_app(settings.model_copy(update={"index": ALIAS, "active_set": SET}))
    port = start_server(app, threads=settings.serve.threads)
    words = ["bluetooth speaker", "usb cable", "laptop bag", "hdmi", "mouse", "keyboard",
             "tv", "headphones", "printer ink", "webcam"]
    log: list[tuple[float, int, float, bool]] = []
    stop = threading.Event()

    def client(k: int) -> None:
        i = k
        while not stop.is_set():
            body = json.dumps({"query": words[i % len(words)], "size": 10}).encode()
            status, _, ms, answer = request(port, "POST", "/search", body)
            degraded = status == 200 and bool(json.loads(answer).get("degraded"))
            log.append((time.monotonic(), status, ms, degraded))
            i += 1
            stop.wait(THINK_S)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds / 3)
    killed = time.monotonic()
    stop_node(cluster.node(VICTIM), kill=True)
    time.sleep(DOWN_S)
    up(cluster, progress=False)
    green = time.monotonic()
    time.sleep(max(seconds - (green - killed) - seconds / 3, 5.0))
    stop.set()
    for t in threads:
        t.join()
    failed = [at for at, status, _, _ in log if status != 200]

    def window(rows) -> dict:
        ms = [m for _, s, m, _ in rows if s == 200]
        return {"searches": len(rows), "failed": sum(1 for _, s, _, _ in rows if s != 200),
                "degraded": sum(1 for _, _, _, d in rows if d),
                "p50_ms": round(float(np.percentile(ms, 50)), 1) if ms else None,
                "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms else None}

    metrics = request(port, "GET", "/metrics")[3].decode()
    dropped = re.search(r"^esrank_ubi_dropped_total (\S+)$", metrics, re.M)
    return {"clients": clients, "think_s": THINK_S, "sidecar_threads": settings.serve.threads,
            "ubi_records_dropped": float(dropped.group(1)) if dropped else None,
            "node_down_s": DOWN_S, "node_back_green_s": round(green - killed - DOWN_S, 1),
            "failed_searches": len(failed),
            "failing_for_s": round(failed[-1] - failed[0], 2) if failed else 0.0,
            "statuses": sorted({s for _, s, _, _ in log}),
            "before": window([r for r in log if r[0] < killed]),
            "during_fault": window([r for r in log if killed <= r[0] < green]),
            "after": window([r for r in log if r[0] >= green])}


def concurrent_deploys(settings, flavor: str, artifact: Path, fs_file: Path, table: Path,
                       rounds: int) -> dict:
    """Two `esrank upload` processes of one model for one feature set at once, `rounds`
    times: every time exactly one active model, in the store and registered, and no model
    left unregistered."""
    engine, env = connect_engine(settings), cli_env(settings, flavor)
    tally = {"rounds": rounds, "consistent": 0, "exit_codes": [], "versions": []}
    for _ in range(rounds):
        runs = [subprocess.Popen([sys.executable, "-m", "esrank.cli", "upload", str(artifact),
                                  "--feature-set", str(fs_file), "--table", str(table),
                                  "--parity-queries", "5", "--json"], cwd=ROOT, env=env,
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        codes = [run.wait(timeout=600) for run in runs]
        names = [json.loads(run.stdout.read()).get("model") if code == 0 else None
                 for run, code in zip(runs, codes, strict=True)]
        doc = entry(engine, SET)
        tally["exit_codes"].append(codes)
        tally["versions"].append(names)
        if (doc.active in names and engine.get_model(doc.active) is not None
                and not unregistered(engine, doc) and all(n in doc.models for n in names if n)):
            tally["consistent"] += 1
    return tally


def private_file(fs_name: str, tmp: Path) -> Path:
    """feature_sets/chorus.yaml renamed to the bench's set, for `esrank upload`."""
    text = (ROOT / "feature_sets" / "chorus.yaml").read_text()
    path = tmp / f"{fs_name}.yaml"
    path.write_text(re.sub(r"(?m)^name: chorus$", f"name: {fs_name}", text, count=1))
    return path


def cluster_section(cluster: LocalEngine, settings, flavor: str, encoder, fs, judged,
                    artifact, table: Path, queries: dict, tmp: Path, args) -> dict:
    """Every fault on the cluster, in turn, and the concurrent deploys."""
    engine = connect_engine(settings)
    result = {"nodes": cluster.nodes, "victim": cluster.node(VICTIM).name,
              "replicas": replicas(engine)}
    result["killed_under_search_load"] = search_load(cluster, settings, args.clients,
                                                     args.seconds)
    index = fault(cluster, settings, fs, lambda: index_catalogue(
        engine, ALIAS, [SLICE], SlowEncoder(encoder, 0.3), batch_size=16,
        progress=False).indexed, 1.5)
    builds = {name: (m["mappings"].get("_meta") or {}).get("esrank_build")
              for name, m in engine.mapping(f"{ALIAS}-*").items()}
    targets = engine.alias_targets(ALIAS)
    index["alias_on_one_complete_index"] = (len(targets) == 1 and builds[targets[0]] ==
                                            "complete" and engine.count(ALIAS) == index["_result"])
    index["partial_indices_left"] = [i for i, b in builds.items() if b != "complete"]
    result["killed_mid_index"] = index
    params_for = query_params(fs.params, encoder)

    def slow_params(texts):
        time.sleep(0.5)  # the parity gate is under way when the node dies
        return params_for(texts)

    deployed = fault(cluster, settings, fs, lambda: deploy(
        engine, ALIAS, artifact, fs, queries, slow_params).model, 1.0)
    doc = entry(engine, SET)
    deployed["models_left_unregistered"] = unregistered(engine, doc)
    deployed["new_model_active_and_stored"] = (doc.active == deployed["_result"]
                                               and engine.get_model(doc.active) is not None)
    result["killed_mid_deploy"] = deployed
    # over the index the faulted log reads (the one the mid-index run built)
    first, baseline = (log_judgments(engine, ALIAS, fs, judged, encoder, recall=Recall(WINDOW),
                                     progress=False).matrix for _ in range(2))
    result["two_logs_without_a_fault"] = same_rows(first, baseline)
    logged = fault(cluster, settings, fs, lambda: log_judgments(
        engine, ALIAS, fs, judged, SlowEncoder(encoder, 0.2), recall=Recall(WINDOW),
        queries_per_request=4, progress=False).matrix, 1.0)
    logged.update(same_rows(logged.pop("_result"), baseline))
    result["killed_mid_log"] = logged
    result["killed_mid_index"]["indexed"] = result["killed_mid_index"].pop("_result")
    result["killed_mid_deploy"]["model"] = result["killed_mid_deploy"].pop("_result")
    result["concurrent_deploys"] = concurrent_deploys(
        settings, flavor, artifact.path, private_file(SET, tmp), table, args.rounds)
    result["replicas_after"] = replicas(engine)
    return result
