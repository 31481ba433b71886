"""Sidecar benchmarks: encoder throughput per backend vs sentence-transformers, HTTP latency
under concurrency, and the overload path. Writes bench/results/sidecar.json.

    python bench/sidecar.py [--quick]

Texts are Chorus product titles and shopper queries. Throughput: texts/s at batch 1, 32 and
256 for the default encoder (ESRANK_ENCODER__*: on a CPU, ONNX int8) and each backend this
machine has in fp32 (numpy, onnx, torch; CUDA ones on a GPU), and for
sentence-transformers `encode` on the same model and device when it is installed, as a ratio.
HTTP: the sidecar under waitress on a local port, /embed with one new query per request from
1, 8 and 64 concurrent clients (p50/p99 ms, requests/s). Overload: 4x as many clients as the
queue holds, hammering for a few seconds: counts of 200/503/other, p99 of the accepted, and
whether the server still answers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
from _chorus import catalogue_documents, judged_queries
from _report import write_result

from esrank.core.settings import ServeSettings, load_settings
from esrank.models.encoder import available_backends, load_encoder, model_dir

ROOT = Path(__file__).resolve().parent.parent


def titles(n: int) -> list[str]:
    """The first `n` Chorus product titles."""
    return [doc["title"] for _, doc in catalogue_documents(n)]


def throughput(encode, texts: list[str], batch: int, seconds: float) -> float:
    encode(texts[:batch])  # warm up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for i in range(0, len(texts), batch):
            encode(texts[i:i + batch])
            done += len(texts[i:i + batch])
            if time.perf_counter() - started >= seconds:
                break
    return done / (time.perf_counter() - started)


def sentence_transformers_encoder(device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(model_dir()), device=device, local_files_only=True)
    return lambda texts: model.encode(texts, batch_size=len(texts), normalize_embeddings=True)


def start_server(app, threads: int) -> int:
    """Serve the sidecar `app` as `esrank serve` does, on a free port (returned)."""
    from esrank.serve.server import make_server

    server = make_server(app, "127.0.0.1", 0, threads)
    threading.Thread(target=server.run, daemon=True).start()
    time.sleep(0.3)
    return server.effective_port


def timed_post(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, float]:
    """POST a JSON body on `conn` and read the whole answer: (status, ms)."""
    started = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status, (time.perf_counter() - started) * 1000


def post(port: int, path: str, body: dict) -> tuple[int, float]:
    """A timed POST on a connection of its own, connect included (a client without a pool)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.connect()
    status, _ = timed_post(conn, path, body)
    conn.close()
    return status, (time.perf_counter() - started) * 1000


def load(port: int, clients: int, seconds: float, texts: list[str]) -> dict:
    statuses: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            # a new text each time: the LRU cache would otherwise answer
            status, ms = post(port, "/embed", {"texts": [f"{texts[i % len(texts)]} {i}"]})
            with lock:
                statuses.append(status)
                if status == 200:
                    latencies.append(ms)
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    ok = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": len(statuses),
            "ok": statuses.count(200), "503": statuses.count(503),
            "other": len(statuses) - statuses.count(200) - statuses.count(503),
            "requests_per_s": round(statuses.count(200) / took, 1),
            "p50_ms": round(float(np.percentile(ok, 50)), 2),
            "p99_ms": round(float(np.percentile(ok, 99)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Shorter runs (smoke test).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sidecar.json")
    args = ap.parse_args()
    seconds = 1.0 if args.quick else 4.0
    texts = titles(1024)
    result: dict = {"backends": available_backends(), "throughput_texts_per_s": {}}

    best = load_encoder(load_settings())  # the default: what `esrank serve` runs
    encoders = {best.name: best, **{e.name: e for e in (load_encoder(backend=b)
                                                        for b in available_backends())}}
    for enc in encoders.values():
        device = getattr(enc, "device", "cpu")
        row = {b: round(throughput(lambda t, e=enc: e.encode(t, batch_size=len(t)), texts, b,
                                   seconds), 1) for b in (1, 32, 256)}
        st = sentence_transformers_encoder(device)
        if st is None:  # the comparison is the point: say why it is missing
            row["vs_sentence_transformers"] = "not measured: sentence-transformers not installed"
        else:
            ref = {b: throughput(st, texts, b, seconds) for b in (1, 32, 256)}
            row["vs_sentence_transformers"] = {b: round(row[b] / ref[b], 2) for b in ref}
            row["sentence_transformers"] = {b: round(v, 1) for b, v in ref.items()}
        result["throughput_texts_per_s"][enc.name] = row
        print(enc.name, row, flush=True)

    from esrank.serve import create_app

    app = create_app(load_settings(url="http://127.0.0.1:9"), encoder=best)
    port = start_server(app, threads=64)
    qs = judged_queries()
    result["http_embed_one_query"] = [load(port, c, seconds, qs) for c in (1, 8, 64)]
    for row in result["http_embed_one_query"]:
        print("http", row, flush=True)

    small = load_settings(url="http://127.0.0.1:9").model_copy(
        update={"serve": ServeSettings(max_queue=16)})
    port = start_server(create_app(small, encoder=best), threads=128)
    overload = load(port, 64, seconds * 2, qs)
    status, _ = post(port, "/embed", {"texts": ["still alive?"]})
    overload.update({"max_queue": 16, "alive_after": status == 200})
    result["overload"] = overload
    result["encoder"] = best.name
    write_result(result, args.out)


if __name__ == "__main__":
    main()
