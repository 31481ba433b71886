"""Reliability: overload, an engine killed mid-work, malformed input — what happens, in figures.

On the local engine of --flavor (it is killed with SIGKILL and restarted several times); with
--nodes 2 (and --port), on the local 2-node cluster instead, the cluster section alone
(bench/_cluster_faults.py: a node killed under 50 sidecar search clients, mid-index,
mid-deploy and mid-log; two deploys of one feature set at once):

- overload: the sidecar (default settings) at capacity on /embed (as many closed-loop clients
  as request threads, unique texts), then an open-loop load at twice that rate for --seconds:
  crashes (connection errors, /healthz after), 5xx other than 503 with Retry-After, p50/p99
  of the accepted requests;
- engine killed mid-index, mid-deploy and mid-search: the live index and the active model
  before and after, partial indices or models left behind, how long searches took to answer
  while the engine was gone, and how long after the engine was back they succeeded again;
- malformed input: feature-set, judgment, catalogue and model files, bad settings (URL forms
  carrying a secret, an engine that never answers, an empty token) and arguments through the
  CLI, and bad requests to the sidecar: how many were tried, how many got a clear error (exit
  1/2 with a message and no traceback, or a 4xx with a JSON error), which showed a secret, and
  how many changed anything live (must be 0);
- concurrent index runs: two `esrank index` processes on the live alias at once, --rounds
  times: whether the alias always ends on exactly one complete index holding every product;
- /embed at the documented limits: `esrank serve` under 4 search clients, then with /embed
  requests of max_texts texts of ~7,000 characters besides, with the default batch limits and
  with one pass per request (as before the limits): peak memory, /search p50/p99 and degraded
  answers.

Writes bench/results/reliability[_cluster][_FLAVOR].json.

    python bench/reliability.py [--flavor elasticsearch] [--seconds 60]
    python bench/reliability.py --nodes 2 --port 9220 --seconds 40 --rounds 5
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from _chorus import FEATURE_SETS, JUDGMENTS, private_feature_set, remove_deployed
from _report import configured_encoder, engine_options, result_path, write_result
from sidecar import start_server

from esrank.app import App, connect_engine
from esrank.catalogue.index import index_catalogue
from esrank.catalogue.recall import Recall
from esrank.core.errors import EsrankError
from esrank.core.settings import ServeSettings, load_settings
from esrank.deploy.registry import entry, unregistered
from esrank.deploy.upload import deploy
from esrank.engine.local import LocalEngine, stop_node, up
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import JudgmentList, read_csv
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import write_table
from esrank.learn.train import TrainParams, train

ROOT = Path(__file__).resolve().parent.parent
SLICE = ROOT / "tests" / "data" / "chorus_slice.jsonl"
ALIAS, SET = "bench-reliability", "relbench2"
WINDOW = 20  # the BM25 candidates the bench's model is logged, trained and served over


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30
            ) -> tuple[int, dict, float, bytes]:
    """(status, headers, ms, body); status 0 when the connection failed."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        answer = response.read()
        conn.close()
        return (response.status, dict(response.getheaders()),
                (time.perf_counter() - started) * 1e3, answer)
    except OSError:
        return 0, {}, (time.perf_counter() - started) * 1e3, b""


def embed(port: int, i: int) -> tuple[int, dict, float, bytes]:
    return request(port, "POST", "/embed",
                   json.dumps({"texts": [f"wireless headphones model {i}"]}).encode())


def overload(port: int, seconds: float, clients: int) -> dict:
    """Capacity (closed loop, as many clients as request threads), then twice that rate
    (open loop)."""
    done, stop = [], time.perf_counter() + 10

    def closed(k: int) -> None:
        i = k * 1_000_000
        while time.perf_counter() < stop:
            status = embed(port, i)[0]
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
    results: list[tuple[int, dict, float, bytes]] = []
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
    statuses = [s for s, _, _, _ in results]
    accepted = [ms for s, _, ms, _ in results if s == 200]
    refused_ok = sum(1 for s, h, _, _ in results if s == 503 and h.get("Retry-After"))
    return {"capacity_per_s": round(capacity, 1), "offered_per_s": round(rate, 1),
            "seconds": seconds, "requests": len(results), "accepted": len(accepted),
            "refused_503_with_retry_after": refused_ok,
            "other_5xx": sum(1 for s in statuses if s >= 500) - refused_ok,
            "connection_errors": statuses.count(0),
            "accepted_p50_ms": round(float(np.percentile(accepted, 50)), 1) if accepted else None,
            "accepted_p99_ms": round(float(np.percentile(accepted, 99)), 1) if accepted else None,
            "alive_after": request(port, "GET", "/healthz")[0] == 200}


def kill(node: LocalEngine) -> None:
    stop_node(node.node(0), kill=True)


def restart(node: LocalEngine) -> float:
    started = time.monotonic()
    up(node, progress=False)
    return round(time.monotonic() - started, 1)


def live_state(engine) -> dict:
    """What is live: the bench alias (targets, count) and the bench set's active model."""
    return {"alias": engine.alias_targets(ALIAS), "docs": engine.count(ALIAS),
            "active": entry(engine, SET).active}


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
    before = live_state(connect_engine(settings))
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
    after = live_state(connect_engine(settings))
    return {"failed_with": failure, "live_unchanged": before == after, "before": before,
            "after": after, "restart_s": restart_s}


def killed_mid_index(settings, node, encoder) -> dict:
    engine = connect_engine(settings)
    result = killed_during(settings, node, lambda: index_catalogue(
        engine, ALIAS, [SLICE], SlowEncoder(encoder, 0.3), batch_size=16, progress=False), 1.5)
    live = result["after"]["alias"]
    return {**result, "partial_indices_left": [
        i for i in connect_engine(settings).indices(f"{ALIAS}-*") if i not in live]}


def killed_mid_deploy(settings, node, encoder, artifact, fs, queries) -> dict:
    engine = connect_engine(settings)
    params_for = query_params(fs.params, encoder)

    def slow_params(texts):
        time.sleep(0.5)  # the parity gate is under way when the engine dies
        return params_for(texts)

    result = killed_during(settings, node, lambda: deploy(
        engine, ALIAS, artifact, fs, queries, slow_params), 1.0)
    engine = connect_engine(settings)
    return {**result, "models_left_unregistered": unregistered(engine, entry(engine, SET))}


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
            status, _, ms, _ = request(port, "POST", "/search", body)
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


def cli_env(settings, flavor: str, **extra: str) -> dict[str, str]:
    """The environment of an `esrank` process on the bench's engine, alias and feature set."""
    return {**os.environ, "ESRANK_FLAVOR": flavor, "ESRANK_INDEX": ALIAS,
            "ESRANK_ACTIVE_SET": SET, "ESRANK_RESCORE_WINDOW": str(settings.rescore_window),
            **({"ESRANK_URL": settings.url} if settings.url else {}),
            **extra}


def concurrent_index(settings, flavor: str, rounds: int) -> dict:
    """Two `esrank index` processes on the live alias at once, `rounds` times: after each, the
    alias must point at exactly one complete index holding every product, and no half-built
    index may be left."""
    engine, env = connect_engine(settings), cli_env(settings, flavor)
    expected = len(SLICE.read_text().splitlines())
    tally = {"rounds": rounds, "alias_on_one_complete_index": 0, "one_run_refused": 0,
             "both_ran_one_after_the_other": 0, "other_outcomes": [], "refusal_example": None}
    for _ in range(rounds):
        runs = [subprocess.Popen([sys.executable, "-m", "esrank.cli", "index", str(SLICE),
                                  "--alias", ALIAS, "--json"], cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)]
        outcomes = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
        codes = sorted(code for code, _ in outcomes)
        refused = [err for code, err in outcomes if code == 1 and "is held by" in err]
        if codes == [0, 1] and refused and "Traceback" not in refused[0]:
            tally["one_run_refused"] += 1
            tally["refusal_example"] = refused[0].strip().splitlines()[-1]
        elif codes == [0, 0]:
            tally["both_ran_one_after_the_other"] += 1
        else:
            tally["other_outcomes"].append([c for c, _ in outcomes])
        builds = {name: (m["mappings"].get("_meta") or {}).get("esrank_build")
                  for name, m in engine.mapping(f"{ALIAS}-*").items()}
        targets = engine.alias_targets(ALIAS)
        if (len(targets) == 1 and builds.get(targets[0]) == "complete"
                and engine.count(ALIAS) == expected and "partial" not in builds.values()):
            tally["alias_on_one_complete_index"] += 1
    return tally


def rss_mb(pid: int) -> dict[str, float]:
    """A process's resident memory now and at its peak (MB)."""
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(status.split(f"{name}:")[1].split()[0]) / 1024  # noqa: E731
    return {"rss_mb": round(field("VmRSS")), "peak_rss_mb": round(field("VmHWM"))}


def embed_at_limits(settings, flavor: str, seconds: float) -> dict:
    """`esrank serve` under searches alone, then under searches plus /embed requests at the
    documented limits (max_texts texts of about 7,000 characters: 256 x 256 tokens), with
    the default batch limits and with batches as large as a request (as before the limits):
    the sidecar's peak memory, /search p50/p99 and degraded answers, /embed outcomes."""
    cfg = ServeSettings()
    long = ("wireless noise cancelling over-ear headphones with a 30 hour battery, "
            "multipoint bluetooth and a foldable design for travel ") * 60
    rows = {}
    for name, extra in {"default": {}, "one pass per request": {
            "ESRANK_SERVE__MAX_BATCH": str(cfg.max_texts),
            "ESRANK_SERVE__TOKEN_BUDGET": "1000000"}}.items():
        with socket.socket() as probe:  # a free port for `esrank serve --port`
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "esrank.cli", "serve", "--port",
                                   str(port)], cwd=ROOT, env=cli_env(settings, flavor, **extra),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while request(port, "GET", "/readyz", timeout=5)[0] != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the sidecar did not become ready")
                time.sleep(0.5)
            idle = rss_mb(server.pid)
            alone = _search_load(port, seconds / 2, embedding=None)
            loaded = _search_load(port, seconds, embedding=[
                f"{i} {long}"[:cfg.max_chars - 3000] for i in range(cfg.max_texts)])
            time.sleep(5)
            rows[name] = {"idle": idle, "searches_alone": alone, "with_embed_load": loaded,
                          "after": rss_mb(server.pid)}
        finally:
            server.terminate()
            server.wait(timeout=30)
    default = rows["default"]
    return {"texts_per_embed": cfg.max_texts, "chars_per_text": len(long[:cfg.max_chars - 3000]),
            "token_budget": "default (CPU: 1,024)", **rows,
            "search_p99_ratio_loaded_vs_alone": round(
                default["with_embed_load"]["search_p99_ms"]
                / default["searches_alone"]["search_p99_ms"], 2)}


def _search_load(port: int, seconds: float, embedding: list[str] | None) -> dict:
    """4 clients searching unique queries (each one embedded) for `seconds`, and, with
    `embedding`, one client posting it to /embed back to back."""
    stop = time.monotonic() + seconds
    searches: list[tuple[int, float, bool]] = []
    embeds: list[tuple[int, float]] = []

    def searcher(k: int) -> None:
        conn, i = http.client.HTTPConnection("127.0.0.1", port, timeout=60), 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request("POST", "/search", json.dumps({"query": f"bluetooth speaker {k} {i}"}),
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read() or b"{}")
            searches.append((response.status, (time.perf_counter() - started) * 1e3,
                             bool(answer.get("degraded"))))
            i += 1

    def embedder() -> None:
        while time.monotonic() < stop:
            status, _, ms, _ = request(port, "POST", "/embed",
                                    json.dumps({"texts": embedding}).encode(), timeout=120)
            embeds.append((status, ms))

    threads = [threading.Thread(target=searcher, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=embedder)] if embedding else []
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [ms for status, ms, _ in searches if status == 200]
    out = {"searches": len(searches), "search_non_200": len(searches) - len(ok),
           "search_degraded": sum(1 for _, _, d in searches if d),
           "search_p50_ms": round(float(np.percentile(ok, 50)), 1),
           "search_p99_ms": round(float(np.percentile(ok, 99)), 1)}
    if embedding:
        out["embed_statuses"] = {str(s): sum(1 for x, _ in embeds if x == s)
                                 for s in sorted({s for s, _ in embeds})}
        out["embed_max_ms"] = round(max(ms for _, ms in embeds), 1) if embeds else None
    return out


# runs a command (argv[2:]) with a 120 s limit and writes its peak resident memory (KB) to
# argv[1]: measured from a small parent, so the bench's own memory is not counted in
PEAK_OF = """
import resource, subprocess, sys
try:
    code = subprocess.run(sys.argv[2:], timeout=120).returncode
except subprocess.TimeoutExpired:
    code = -9
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 124)
"""


def black_hole() -> socket.socket:
    """A listening socket that never answers: connections open, requests hang."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def malformed(settings, flavor: str, port: int) -> dict:
    """Bad files, settings and arguments through the CLI, bad requests to the sidecar: count
    clear errors (exit 1/2 with a message and no traceback; a 4xx with a JSON error), secrets
    shown, and changes to what is live."""
    engine = connect_engine(settings)
    snapshot = lambda: (live_state(engine), sorted(engine.list_feature_sets()),  # noqa: E731
                        engine.list_models())
    before = snapshot()
    data = ROOT / "tests" / "data"
    tried: list[tuple[str, bool]] = []
    leaked: list[str] = []
    timings: dict[str, dict] = {}
    hole = black_hole()
    silent = f"http://127.0.0.1:{hole.getsockname()[1]}"

    def cli(what: str, *args: str, secret: str | None = None, **env: str) -> None:
        """Run esrank; a run still going after 120 s is killed (no clear error)."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            peak = Path(folder) / "peak"
            run = subprocess.run([sys.executable, "-c", PEAK_OF, str(peak), sys.executable, "-m",
                                  "esrank.cli", *args], cwd=ROOT, capture_output=True, text=True,
                                  env=cli_env(settings, flavor, **env))
            peak_kb = int(peak.read_text())
        clear = (run.returncode in (1, 2) and "Traceback" not in run.stderr
                 and len(run.stderr.strip()) > 10)
        tried.append((what, clear))
        if secret and secret in run.stdout + run.stderr:
            leaked.append(what)
        timings[what] = {"seconds": round(time.monotonic() - started, 1),
                         "peak_rss_mb": round(peak_kb / 1024), "exit": run.returncode,
                         "said": run.stderr.strip().splitlines()[-1][:300] if run.stderr else ""}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for bad in sorted((data / "feature_sets" / "bad").glob("*.yaml")):
            cli(f"features push {bad.name}", "features", "push", str(bad))
        judgment_files = sorted((data / "judgments").glob("bad_*")) + [
            data / "judgments" / "conflict.csv"]
        (tmp / "no_columns.csv").write_text("q,d\na,b\n")
        (tmp / "latin1.csv").write_bytes("query,docid,rating\ncaf\xe9,1,2\n".encode("latin-1"))
        for bad in [*judgment_files, tmp / "no_columns.csv", tmp / "latin1.csv"]:
            cli(f"log {bad.name}", "log", str(bad), "-o", str(tmp / "t.parquet"))
        slice_ = SLICE.read_text()
        products = {
            "all_bad.jsonl": '{"title": "no id"}\n{"id": "x", "title": ""}\n',
            "truncated.json": '[{"id": "1", "title": "a"}, {"id": ',
            "object.json": '{"id": "1", "title": "a"}',
            "null_and_5.jsonl": "null\n5\n",
            "long_id.jsonl": slice_ + json.dumps({"id": "x" * 600, "title": "long id"}) + "\n",
            "repeated_ids.jsonl": slice_ + slice_.splitlines()[0] + "\n",
            "shrinks_the_alias.jsonl": "\n".join(slice_.splitlines()[:5]) + "\n",
            "huge_line.jsonl": json.dumps({"id": "huge", "title": "x" * 50_000_000}) + "\n",
        }
        for name, text in products.items():
            (tmp / name).write_text(text)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("p.jsonl", slice_)
        raw = buffer.getvalue()
        (tmp / "truncated.zip").write_bytes(raw[:len(raw) // 2])
        start = raw.index(b"p.jsonl") + 40
        (tmp / "corrupt.zip").write_bytes(raw[:start] + bytes(500) + raw[start + 500:])
        for bad in [data / "products_bad.jsonl", *(tmp / n for n in products),
                    tmp / "truncated.zip", tmp / "corrupt.zip", tmp / "missing.jsonl"]:
            cli(f"index {bad.name}", "index", str(bad), "--alias", ALIAS)
        cli("index --keep -1", "index", str(SLICE), "--alias", ALIAS, "--keep", "-1")
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
            cli(f"upload {name}", "upload", str(folder), "--table", str(tmp / "none.parquet"))
        secret = "s3cr3tpw"
        for what, url in {"URL without a scheme": f"user:{secret}@127.0.0.1:9200",
                          "URL with a token as user name": f"https://{secret}@127.0.0.1:9",
                          "URL with a port that is no number": "http://127.0.0.1:abc"}.items():
            cli(what, "search", "tv", secret=secret, ESRANK_URL=url, ESRANK_TIMEOUT="2")
        for engine_flavor in ("opensearch", "elasticsearch"):
            cli(f"an {engine_flavor} that never answers", "search", "tv", ESRANK_URL=silent,
                ESRANK_FLAVOR=engine_flavor, ESRANK_TIMEOUT="2")
        (tmp / "pairs.csv").write_text("query,docid,rating\ntv,1,0\n")
        cli("LLM endpoint with a password", "judgments", "llm", str(tmp / "pairs.csv"), "-o",
            str(tmp / "grades.csv"), secret=secret,
            ESRANK_LLM__ENDPOINT=f"http://user:{secret}@127.0.0.1:9/v1")
        cli("serve on 0.0.0.0 with an empty token", "serve", "--host", "0.0.0.0", "--port",
            "1", ESRANK_SERVE__TOKEN="")
    hole.close()
    deep = b'{"texts": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    bad_requests = [
        ("/embed", b'{"texts": ["' + b"a" * 3_000_000 + b'"]}'), ("/embed", b"{not json"),
        ("/embed", b'{"texts": "one"}'), ("/embed", b'{"texts": []}'),
        ("/embed", deep), ("/search", deep), ("/events", deep),
        ("/embed", b'{"texts": ["\\ud800"]}'), ("/search", b'{"query": "tv \\ud800"}'),
        ("/search", b'{"query": "tv", "model": "bm25+rerank\\u00b9"}'),
        ("/search", b'{"query": "tv", "size": 1000}'), ("/search", b'{"query": 7}'),
        ("/search", b'{"query": "tv", "model": "' + b"9" * 5000 + b'"}'),
        ("/events", b'{"events": [{"action": "impression", "query_id": "q", "doc_id": "1"}]}'),
        ("/events", b'{"events": [{"action": "<b>buy</b>", "query_id": "q", "doc_id": "1"}]}'),
        ("/events", b'{"events": [{"action": "purchase", "query_id": "never-served", '
                    b'"doc_id": "1"}]}'),
        ("/compare/query", b'{"query": "tv", "configs": ["a","b","c","d","e","f","g","h","i"]}'),
        ("/compare/why", b'{"config": "bm25", "query": "", "doc_id": "1"}'),
        ("/compare/queries", b'{"a": "bm25"}'), ("/rerank", b'{"query": "tv", "texts": [1]}'),
    ]
    for path, body in bad_requests:
        status, _, _, answer = request(port, "POST", path, body)
        try:
            shaped = isinstance(json.loads(answer).get("error"), str)
        except (ValueError, AttributeError):
            shaped = False
        tried.append((f"POST {path} {body[:40]!r}", 400 <= status < 500 and shaped))
    long_query = " ".join(f"word{i}" for i in range(300))
    status, _, _, answer = request(port, "POST", "/search",
                                   json.dumps({"query": long_query}).encode())
    long_ok = status == 200 and json.loads(answer)["dropped_terms"] == 300 - 64 and \
        json.loads(answer)["degraded"] is None
    changed = snapshot() != before
    return {"tried": len(tried), "clear_errors": sum(1 for _, ok in tried if ok),
            "unclear": [what for what, ok in tried if not ok], "secrets_shown": leaked,
            "changed_live": int(changed), "huge_line_index": timings["index huge_line.jsonl"],
            "engine_that_never_answers": {f: timings[f"an {f} that never answers"]
                                          for f in ("opensearch", "elasticsearch")},
            "300_word_query_answered_with_dropped_terms": long_ok}


def protected(engine, encoder, tmp: Path):
    """A live alias, a feature set and an active model to protect: (feature set, judgments,
    logged table's file, model, its queries)."""
    index_catalogue(engine, ALIAS, [SLICE], encoder, progress=False)
    fs = private_feature_set(engine, load_feature_set(FEATURE_SETS / "chorus.yaml"), SET)
    ids = {json.loads(line)["id"] for line in SLICE.read_text().splitlines()}
    judged = JudgmentList(tuple(j for j in read_csv(JUDGMENTS) if j.doc_id in ids))
    table = log_judgments(engine, ALIAS, fs, judged, encoder, recall=Recall(WINDOW),
                          progress=False).matrix
    queries = table.docs_by_query()
    write_table(table, tmp / "t.parquet")
    train(table, tmp / "m", search=False, device="cpu", params=TrainParams(num_rounds=20),
          table=str(tmp / "t.parquet"))
    artifact = ModelArtifact.load(tmp / "m")
    deploy(engine, ALIAS, artifact, fs, queries, query_params(fs.params, encoder))
    return fs, judged, tmp / "t.parquet", artifact, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=20, help="Rounds of two concurrent index runs "
                    "(with --nodes: of two concurrent deploys).")
    ap.add_argument("--embed-seconds", type=float, default=40.0,
                    help="Seconds of searches under /embed load per batch configuration.")
    ap.add_argument("--nodes", type=int, default=1, help="2 or more: the cluster section alone, "
                    "on the local cluster of that many nodes at --port (esrank engine up "
                    "--nodes N --port P).")
    ap.add_argument("--port", type=int, help="The cluster's first port (default: the flavor's).")
    ap.add_argument("--clients", type=int, default=50,
                    help="Concurrent /search clients while a node is killed (--nodes).")
    ap.add_argument("--out", type=Path, help="Default: bench/results/reliability[_cluster]"
                    "[_FLAVOR].json.")
    args = ap.parse_args()
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # the overload is on purpose
    # the sidecars serve the model over the candidates it was trained on
    settings = load_settings(url=args.url, flavor=args.flavor, rescore_window=WINDOW)
    if not settings.uses_local_engine:
        raise SystemExit("this bench kills and restarts the local engine: no --url")
    node = App(settings).local_engine(nodes=args.nodes, port=args.port)
    if args.nodes > 1:
        settings = load_settings(url=",".join(node.urls), flavor=args.flavor,
                                 rescore_window=WINDOW)
    encoder = configured_encoder()
    engine = connect_engine(settings)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        fs, judged, table, artifact, queries = protected(engine, encoder, Path(tmp))
        if args.nodes > 1:
            from _cluster_faults import cluster_section

            result = {"flavor": args.flavor, **cluster_section(
                node, settings, args.flavor, encoder, fs, judged, artifact, table, queries,
                Path(tmp), args)}
        else:
            result = single_node(node, settings, args, encoder, fs, artifact, queries)
    engine = connect_engine(settings)
    remove_deployed(engine, SET, engine.indices(f"{ALIAS}-*"))
    result["seconds"] = round(time.monotonic() - started, 1)
    name = "reliability_cluster" if args.nodes > 1 else "reliability"
    write_result(result, args.out or result_path(name, args))


def single_node(node, settings, args, encoder, fs, artifact, queries) -> dict:
    """The single-node sections: overload, malformed input, concurrent index runs, /embed at
    its limits, and the engine killed mid-index, mid-deploy and mid-search."""
    from esrank.serve import create_app

    serve = ServeSettings()  # the defaults, as `esrank serve` runs
    sidecar = create_app(settings.model_copy(update={"serve": serve, "index": ALIAS,
                                                     "active_set": SET}), encoder=encoder)
    port = start_server(sidecar, threads=serve.threads)
    result = {"flavor": args.flavor, "overload": overload(port, args.seconds, serve.threads)}
    result["malformed_input"] = malformed(settings, args.flavor, port)
    result["concurrent_index"] = concurrent_index(settings, args.flavor, args.rounds)
    result["embed_at_limits"] = embed_at_limits(settings, args.flavor, args.embed_seconds)
    result["killed_mid_index"] = killed_mid_index(settings, node, encoder)
    result["killed_mid_deploy"] = killed_mid_deploy(settings, node, encoder, artifact, fs,
                                                    queries)
    result["killed_mid_search"] = killed_mid_search(settings, node, encoder)
    return result


if __name__ == "__main__":
    main()
