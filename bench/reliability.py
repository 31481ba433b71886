"""Reliability: overload, an engine killed mid-work, malformed input — what happens, in figures.

On the local engine of --flavor (it is killed with SIGKILL and restarted several times):

- overload: the sidecar (default settings) at capacity on /embed (as many closed-loop clients
  as request threads, unique texts), then an open-loop load at twice that rate for --seconds:
  crashes (connection errors, /healthz after), 5xx other than 503 with Retry-After, p50/p99
  of the accepted requests;
- engine killed mid-index, mid-deploy and mid-search: the live index and the active model
  before and after, partial indices or models left behind, how long searches took to answer
  while the engine was gone, and how long after the engine was back they succeeded again;
- malformed input: feature-set, judgment, catalogue and model files through the CLI, and bad
  requests to the sidecar: how many were tried, how many got a clear error (exit 1/2 with a
  message, or a 4xx with a JSON error), and how many changed anything live (must be 0).

Writes bench/results/reliability[_FLAVOR].json.

    python bench/reliability.py [--flavor elasticsearch] [--seconds 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _report import configured_encoder, engine_options, result_path, write_result
from sidecar import start_server

from esrank import registry
from esrank.artifact import ModelArtifact
from esrank.catalogue import index_catalogue
from esrank.config import ServeSettings, load_settings
from esrank.engine.local import LocalEngine, up
from esrank.errors import EsrankError
from esrank.feature_log import log_judgments, query_params, write_table
from esrank.features import load_feature_set
from esrank.judgments import JudgmentList, read_csv
from esrank.search import bm25_query
from esrank.train import TrainParams, train

ROOT = Path(__file__).resolve().parent.parent
SLICE = ROOT / "tests" / "data" / "chorus_slice.jsonl"
CHORUS = ROOT / "esrank" / "data" / "chorus"
ALIAS, SET = "bench-reliability", "relbench2"


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, float]:
    """(status, headers, ms); status 0 when the connection failed."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, dict(response.getheaders()), (time.perf_counter() - started) * 1e3
    except OSError:
        return 0, {}, (time.perf_counter() - started) * 1e3


def embed(port: int, i: int) -> tuple[int, dict, float]:
    return request(port, "POST", "/embed",
                   json.dumps({"texts": [f"wireless headphones model {i}"]}).encode())


def overload(port: int, seconds: float, clients: int) -> dict:
    """Capacity (closed loop, as many clients as request threads), then twice that rate
    (open loop)."""
    done, stop = [], time.perf_counter() + 10

    def closed(k: int) -> None:
        i = k * 1_000_000
        while time.perf_counter() < stop:
            status, _, _ = embed(port, i)
            i += 1
            if status == 200:
                done.append(1)

    threads = [threading.Thread(target=closed, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    capacity = len(done) / 10
    rate, workers = 2 * capacity, 4 * clients
    results: list[tuple[int, dict, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def open_loop(k: int) -> None:
        n = 0
        while True:
            due = start + (k + n * workers) / rate  # worker k fires every workers/rate s
            if due > start + seconds:
                return
            time.sleep(max(0.0, due - time.perf_counter()))
            answer = embed(port, 10_000_000 + k + n * workers)
            with lock:
                results.append(answer)
            n += 1

    threads = [threading.Thread(target=open_loop, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [s for s, _, _ in results]
    accepted = [ms for s, _, ms in results if s == 200]
    refused_ok = sum(1 for s, h, _ in results if s == 503 and h.get("Retry-After"))
    return {"capacity_per_s": round(capacity, 1), "offered_per_s": round(rate, 1),
            "seconds": seconds, "requests": len(results), "accepted": len(accepted),
            "refused_503_with_retry_after": refused_ok,
            "other_5xx": sum(1 for s in statuses if s >= 500) - refused_ok,
            "connection_errors": statuses.count(0),
            "accepted_p50_ms": round(float(np.percentile(accepted, 50)), 1) if accepted else None,
            "accepted_p99_ms": round(float(np.percentile(accepted, 99)), 1) if accepted else None,
            "alive_after": request(port, "GET", "/healthz")[0] == 200}


def kill(node: LocalEngine) -> None:
    os.kill(int(node.pid_file.read_text()), signal.SIGKILL)
    time.sleep(1)


def restart(node: LocalEngine) -> float:
    started = time.monotonic()
    up(node, progress=False)
    return round(time.monotonic() - started, 1)


def live_state(engine) -> dict:
    """What is live: the bench alias (targets, count) and the bench set's active model."""
    return {"alias": engine.alias_targets(ALIAS), "docs": engine.count(ALIAS),
            "active": registry.entry(engine, SET).active}


class SlowEncoder:
    """The real encoder, a little slow: the engine dies while work is in flight."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds
        self.name, self.dims, self.max_tokens = inner.name, inner.dims, inner.max_tokens
        self.key, self.token_counts = inner.key, inner.token_counts

    def encode(self, texts, batch_size=64):
        time.sleep(self.seconds)
        return self.inner.encode(texts, batch_size)


def killed_during(settings, node, work, wait: float) -> dict:
    """Run `work` in a thread, kill the engine after `wait` s, restart it: how `work` failed,
    and whether what is live changed."""
    before = live_state(settings.connect())
    failure: list[str] = []

    def run() -> None:
        try:
            work()
        except EsrankError as exc:
            failure.append(type(exc).__name__)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(wait)
    kill(node)
    worker.join()
    restart_s = restart(node)
    after = live_state(settings.connect())
    return {"failed_with": failure, "live_unchanged": before == after, "before": before,
            "after": after, "restart_s": restart_s}


def killed_mid_index(settings, node, encoder) -> dict:
    engine = settings.connect()
    result = killed_during(settings, node, lambda: index_catalogue(
        engine, ALIAS, [SLICE], SlowEncoder(encoder, 0.3), batch_size=16, progress=False), 1.5)
    live = result["after"]["alias"]
    return {**result, "partial_indices_left": [
        i for i in settings.connect().indices(f"{ALIAS}-*") if i not in live]}


def killed_mid_deploy(settings, node, encoder, artifact, fs, queries) -> dict:
    engine = settings.connect()
    params_for = query_params(fs.params, encoder)

    def slow_params(texts):
        time.sleep(0.5)  # the parity gate is under way when the engine dies
        return params_for(texts)

    result = killed_during(settings, node, lambda: registry.deploy(
        engine, ALIAS, artifact, fs, queries, slow_params), 1.0)
    engine = settings.connect()
    return {**result, "models_left_unregistered": registry.unregistered(
        engine, registry.entry(engine, SET))}


def killed_mid_search(settings, node, encoder) -> dict:
    from esrank.serve import create_app

    app = create_app(settings.model_copy(update={"index": ALIAS, "active_set": SET}),
                     encoder=encoder)
    port = start_server(app, threads=8)
    log: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def client() -> None:
        i = 0
        while not stop.is_set():
            body = json.dumps({"query": f"bluetooth speaker {i % 7}", "size": 10}).encode()
            status, _, ms = request(port, "POST", "/search", body)
            log.append((time.monotonic(), status, ms))
            i += 1
            time.sleep(0.05)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(3)
    killed_at = time.monotonic()
    kill(node)
    time.sleep(5)
    restart(node)
    back_at = time.monotonic()
    deadline = back_at + 30
    while time.monotonic() < deadline and not any(t > back_at and s == 200 for t, s, _ in log):
        time.sleep(0.1)
    stop.set()
    thread.join()
    down = [(s, ms) for t, s, ms in log if killed_at < t <= back_at]
    recovered = [t for t, s, _ in log if t > back_at and s == 200]
    return {"engine_timeout_s": settings.serve.engine_timeout, "requests_while_down": len(down),
            "statuses_while_down": sorted({s for s, _ in down}),
            "max_ms_while_down": round(max(ms for _, ms in down), 1) if down else None,
            "recovered_s_after_restart": round(recovered[0] - back_at, 2) if recovered else None,
            "before_ok": sum(1 for t, s, _ in log if t < killed_at and s == 200)}


def malformed(settings, flavor: str, port: int) -> dict:
    """Bad files through the CLI, bad requests to the sidecar; count clear errors and changes."""
    engine = settings.connect()
    snapshot = lambda: (live_state(engine), sorted(engine.list_feature_sets()),  # noqa: E731
                        engine.list_models())
    before = snapshot()
    env = {**os.environ, "ESRANK_FLAVOR": flavor, "ESRANK_INDEX": ALIAS,
           "ESRANK_ACTIVE_SET": SET, **({"ESRANK_URL": settings.url} if settings.url else {})}
    data = ROOT / "tests" / "data"
    tried: list[tuple[str, bool]] = []

    def cli(*args: str) -> None:
        run = subprocess.run([sys.executable, "-m", "esrank.cli", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        clear = run.returncode in (1, 2) and "Traceback" not in run.stderr and \
            len(run.stderr.strip()) > 10
        tried.append((" ".join(args[:2]), clear))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for bad in sorted((data / "feature_sets" / "bad").glob("*.yaml")):
            cli("features", "push", str(bad))
        judgment_files = sorted((data / "judgments").glob("bad_*")) + [
            data / "judgments" / "conflict.csv"]
        (tmp / "no_columns.csv").write_text("q,d\na,b\n")
        (tmp / "latin1.csv").write_bytes("query,docid,rating\ncaf\xe9,1,2\n".encode("latin-1"))
        for bad in [*judgment_files, tmp / "no_columns.csv", tmp / "latin1.csv"]:
            cli("log", str(bad), "-o", str(tmp / "t.parquet"))
        (tmp / "all_bad.jsonl").write_text('{"title": "no id"}\n{"id": "x", "title": ""}\n')
        (tmp / "truncated.json").write_text('[{"id": "1", "title": "a"}, {"id": ')
        (tmp / "object.json").write_text('{"id": "1", "title": "a"}')
        for bad in [data / "products_bad.jsonl", tmp / "all_bad.jsonl", tmp / "truncated.json",
                    tmp / "object.json", tmp / "missing.jsonl"]:
            cli("index", str(bad), "--alias", ALIAS)
        for name, files in {"no_meta": {"model.json": "{}"},
                            "bad_json": {"model.json": "{}", "meta.json": "{not json"},
                            "bad_model": {"model.json": "nonsense",
                                          "meta.json": json.dumps({
                                              "feature_set": "x@1", "feature_names": ["a"],
                                              "missing_as": 1.0})}}.items():
            folder = tmp / name
            folder.mkdir()
            for file, text in files.items():
                (folder / file).write_text(text)
            cli("upload", str(folder), "--table", str(tmp / "none.parquet"))
    bad_requests = [
        ("/embed", b'{"texts": ["' + b"a" * 3_000_000 + b'"]}'), ("/embed", b"{not json"),
        ("/embed", b'{"texts": "one"}'), ("/embed", b'{"texts": []}'),
        ("/search", b'{"query": "tv", "model": "bm25+rerank\\u00b9"}'),
        ("/search", b'{"query": "tv", "size": 1000}'), ("/search", b'{"query": 7}'),
        ("/search", b'{"query": "tv", "model": "' + b"9" * 5000 + b'"}'),
        ("/compare/query", b'{"query": "tv", "configs": ["a","b","c","d","e","f","g","h","i"]}'),
        ("/compare/why", b'{"config": "bm25", "query": "", "doc_id": "1"}'),
        ("/compare/queries", b'{"a": "bm25"}'), ("/rerank", b'{"query": "tv", "texts": [1]}'),
    ]
    for path, body in bad_requests:
        status, headers, _ = request(port, "POST", path, body)
        tried.append((path, 400 <= status < 500))
    changed = snapshot() != before
    return {"tried": len(tried), "clear_errors": sum(1 for _, ok in tried if ok),
            "unclear": [what for what, ok in tried if not ok], "changed_live": int(changed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, help="Default: bench/results/reliability[_FLAVOR].json.")
    args = ap.parse_args()
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # the overload is on purpose
    settings = load_settings(url=args.url, flavor=args.flavor)
    if not settings.uses_local_engine:
        raise SystemExit("this bench kills and restarts the local engine: no --url")
    e, n = settings.engine, settings.local_node()
    node = LocalEngine(home=settings.home, flavor=settings.local_flavor, version=n.version,
                       port=n.port, transport_port=n.transport_port, heap=e.heap,
                       java_home=n.java_home, maven_repo=e.maven_repo, ltr_plugin=n.ltr_plugin,
                       ltr_plugin_sha256=n.ltr_plugin_sha256)
    encoder = configured_encoder()
    engine = settings.connect()
    started = time.monotonic()

    # a live alias, a feature set and an active model to protect
    index_catalogue(engine, ALIAS, [SLICE], encoder, progress=False)
    fs = dataclasses.replace(load_feature_set(ROOT / "feature_sets" / "chorus.yaml"), name=SET)
    engine.ensure_store()
    engine.put_feature_set(fs)
    ids = {json.loads(line)["id"] for line in SLICE.read_text().splitlines()}
    judged = JudgmentList(tuple(j for j in read_csv(CHORUS / "judgments.csv") if j.doc_id in ids))
    table = log_judgments(engine, ALIAS, fs, judged, encoder, window=20, first_pass=bm25_query,
                          progress=False).matrix
    queries = table.docs_by_query()
    with tempfile.TemporaryDirectory() as tmp:
        write_table(table, Path(tmp) / "t.parquet")
        train(table, Path(tmp) / "m", search=False, device="cpu",
              params=TrainParams(num_rounds=20), table=str(Path(tmp) / "t.parquet"))
        artifact = ModelArtifact.load(Path(tmp) / "m")
        params_for = query_params(fs.params, encoder)
        registry.deploy(engine, ALIAS, artifact, fs, queries, params_for)

        from esrank.serve import create_app

        serve = ServeSettings()  # the defaults, as `esrank serve` runs
        sidecar = create_app(settings.model_copy(update={"serve": serve, "index": ALIAS,
                                                         "active_set": SET}), encoder=encoder)
        port = start_server(sidecar, threads=serve.threads)
        result = {"flavor": args.flavor,
                  "overload": overload(port, args.seconds, serve.threads)}
        result["malformed_input"] = malformed(settings, args.flavor, port)
        result["killed_mid_index"] = killed_mid_index(settings, node, encoder)
        result["killed_mid_deploy"] = killed_mid_deploy(settings, node, encoder, artifact, fs,
                                                        queries)
        result["killed_mid_search"] = killed_mid_search(settings, node, encoder)
    engine = settings.connect()
    for name in engine.list_models(f"{SET}-v"):
        if engine.get_model(name) is not None:
            engine.delete_model(name)
    engine.transport.request("bench cleanup", "DELETE",
                             f"/{registry.REGISTRY_INDEX}/_doc/{SET}")
    for index in engine.indices(f"{ALIAS}-*"):
        engine.delete_index(index)
    result["seconds"] = round(time.monotonic() - started, 1)
    write_result(result, args.out or result_path("reliability", args))


if __name__ == "__main__":
    main()
