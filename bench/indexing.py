"""Catalogue indexing as `esrank index` does it: both vectors per product, the default
encoder, the embedding cache cold and warm; against the NumPy backend, ONNX fp32 and
sentence-transformers in the same run; and what the kNN graph costs and finds.

On the live engine, in one process; section `encoder`:
- the whole catalogue (or --limit products) through `index_catalogue` with the default
  encoder (ESRANK_ENCODER__*; on a CPU: ONNX Runtime int8) behind an empty cache (cold), then
  again with the cache it filled (warm): docs/s end to end;
- on a --sample of products, embedding both texts of each: docs/s of the default encoder,
  ONNX fp32, NumPy fp32 and sentence-transformers (when installed), as ratios, and the
  cosine of the default's vectors to fp32's;
- NumPy end to end on the sample (cold), the backend the batch commands used before.
Section `graph`, bulk only: the same documents with precomputed vectors (from esrank's
embedding cache, ESRANK_HOME/cache, which embeds what it lacks first), so only the engine's
work is timed, into an index without the kNN graph, with the graph as esrank maps it, on
OpenSearch with the graph and the vectors kept in `_source` (see graph_variants), and on
Elasticsearch with `int8_hnsw` on text_vector (the quantized alternative). For each: docs/s
and seconds until searchable (bulk + refresh), bytes on disk (its segments') once background
merges are done, and for the 97 judged Chorus queries the recall@50/@100/@200 of a kNN
search against exact cosine (NumPy over the same vectors) and the p50 of a kNN search for 100
and for 200; the same again after a force-merge to one segment (timed). Without a graph the
kNN search is exact: Elasticsearch's `flat` scores every vector, and OpenSearch (no k-NN on the
index) runs k-NN's `knn_score` script. Ratios against no graph.
Writes bench/results/indexing[_SECTION][_FLAVOR].json (the section's name when only one runs).

    python bench/indexing.py [--sections encoder,graph] [--limit N] [--sample 2000]
                             [--flavor elasticsearch]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from _chorus import catalogue_documents, catalogue_files, judged_queries
from _report import engine_options, result_path, write_result

from esrank import app
from esrank.catalogue.index import ID_FIELD, VECTOR_FIELD, has_graph, index_body, index_catalogue
from esrank.catalogue.products import text_of
from esrank.catalogue.recall import Recall, recall_bodies
from esrank.core.settings import load_settings
from esrank.models.embed_cache import CachedEncoder, EmbeddingCache
from esrank.models.encoder import load_encoder, model_dir

ALIAS = "bench-catalogue"
SECTIONS = ("encoder", "graph")
GRAPH_INDEX = "bench-graph-"  # + the variant's name
KS = (50, 100, 200)  # recall@K of the kNN search against exact cosine (200: ESRANK_RECALL_KNN)
LATENCY_KS, LATENCY_ROUNDS = (100, 200), 3  # the kNN searches timed, passes over the queries
TIMEOUT = 600.0  # seconds an engine request may take (a force-merge builds the whole graph)


def texts_of(docs: list[dict]) -> list[str]:
    return [d["title"] for d in docs] + [text_of(d) for d in docs]


def encode_rate(encode, docs: list[dict]) -> tuple[float, np.ndarray]:
    """Products per second embedding both texts of each, and the vectors."""
    encode(texts_of(docs[:32]))  # warm up
    started = time.perf_counter()
    vectors = encode(texts_of(docs))
    return len(docs) / (time.perf_counter() - started), vectors


def sentence_transformers():
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True)


def index_run(engine, paths, encoder, limit) -> dict:
    report = index_catalogue(engine, ALIAS, paths, encoder, limit=limit, progress=False)
    for name in engine.indices(f"{ALIAS}-*"):
        engine.delete_index(name)
    return {"products": report.indexed, "seconds": round(report.seconds, 1),
            "docs_per_s": round(report.docs_per_second, 1), "encoder": report.encoder}


def encoder_section(engine, settings, encoder, limit: int | None, sample: list[dict]) -> dict:
    """`esrank index` cold and warm, the encoders side by side on `sample`, and NumPy end to
    end (the module's docstring)."""
    paths, result = catalogue_files(), {}
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = CachedEncoder(encoder, EmbeddingCache(Path(cache_dir)))
        for run in ("cold_cache", "warm_cache"):
            result[run] = index_run(engine, paths, cached, limit)
            print(run, result[run], flush=True)
        result["cache_bytes"] = cached.cache.size_bytes
    result["warm_vs_cold"] = round(result["warm_cache"]["docs_per_s"]
                                   / result["cold_cache"]["docs_per_s"], 2)
    rates, vectors = {}, {}
    fp32 = load_encoder(backend="onnx", onnx_dir=settings.home / "models")
    numpy = load_encoder(backend="numpy")
    for name, encode in ((encoder.name, encoder.encode), (fp32.name, fp32.encode),
                         (numpy.name, numpy.encode),
                         ("sentence-transformers", sentence_transformers())):
        if encode is not None:
            rates[name], vectors[name] = encode_rate(encode, sample)
            print("encode", name, round(rates[name], 1), flush=True)
    result["encode_only_sample_docs_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    result["default_vs"] = {k: round(rates[encoder.name] / v, 2) for k, v in rates.items()
                            if k != encoder.name}
    cosines = (vectors[encoder.name] * vectors[fp32.name]).sum(axis=1)
    result["default_cosine_to_fp32"] = {"min": round(float(cosines.min()), 4),
                                        "mean": round(float(cosines.mean()), 4),
                                        "p01": round(float(np.percentile(cosines, 1)), 4)}
    with tempfile.TemporaryDirectory() as cache_dir:
        numpy_run = index_run(engine, paths, CachedEncoder(numpy, EmbeddingCache(
            Path(cache_dir))), len(sample))
    result["numpy_end_to_end_sample"] = numpy_run
    result["cold_vs_numpy_end_to_end"] = round(result["cold_cache"]["docs_per_s"]
                                               / numpy_run["docs_per_s"], 2)
    return result


def with_vectors(docs: list[dict], encoder) -> np.ndarray:
    """Put both vectors on every document as bulk sends them (7 decimals); the text vectors,
    one row per document."""
    vectors = encoder.encode(texts_of(docs))
    for doc, title, text in zip(docs, vectors[:len(docs)], vectors[len(docs):], strict=True):
        doc["title_vector"] = title.astype(np.float64).round(7).tolist()
        doc["text_vector"] = text.astype(np.float64).round(7).tolist()
    return np.array([d["text_vector"] for d in docs], dtype=np.float32)


def bulk_only(engine, index: str, body: dict, docs: list[dict]) -> dict:
    """`docs`, their vectors precomputed (no embedding at all), bulk-sent into a fresh `index`
    mapped by `body`, then refreshed: the seconds of each, and docs/s until searchable."""
    if engine.index_exists(index):
        engine.delete_index(index)
    engine.create_index(index, body)
    started = time.perf_counter()
    for i in range(0, len(docs), 256):
        engine.bulk(index, [(d["id"], d) for d in docs[i:i + 256]])
    sent = time.perf_counter()
    engine.refresh(index)
    searchable = time.perf_counter() - started
    return {"bulk_s": round(sent - started, 1), "refresh_s": round(searchable + started - sent, 2),
            "searchable_s": round(searchable, 1), "docs_per_s": round(len(docs) / searchable, 1)}


def on_disk(engine, index: str) -> dict:
    """`index`'s bytes on disk, the sum of its segments' sizes (`_segments`: `_stats/store`
    caches its figure for 10 s, index.store.stats_refresh_interval), and its segments, once its
    background merges are done and it is refreshed and flushed."""
    waited = time.perf_counter()
    while engine.transport.request("merge stats", "GET", f"/{index}/_stats/merge", target=index
                                   )["indices"][index]["primaries"]["merges"]["current"]:
        time.sleep(0.5)
    waited = time.perf_counter() - waited
    engine.refresh(index)
    engine.transport.request("flush", "POST", f"/{index}/_flush", target=index)
    shards = engine.transport.request("segments", "GET", f"/{index}/_segments",
                                      target=index)["indices"][index]["shards"]
    segments = [s for copies in shards.values() for copy in copies
                for s in copy["segments"].values()]
    return {"merges_wait_s": round(waited, 1),
            "store_bytes": sum(s["size_in_bytes"] for s in segments), "segments": len(segments)}


def force_merge(engine, index: str) -> dict:
    """Seconds to force-merge `index` to one segment (and refresh), and then `on_disk`."""
    started = time.perf_counter()
    engine.transport.request("force merge", "POST", f"/{index}/_forcemerge",
                             params={"max_num_segments": "1"}, target=index)
    engine.refresh(index)
    return {"forcemerge_s": round(time.perf_counter() - started, 1), **on_disk(engine, index)}


def graph_variants(dialect, dims: int, encoder_key: str) -> dict[str, dict]:
    """Index bodies by name: without the graph, with it as esrank maps it; on OpenSearch the
    same with the vectors kept in `_source` too (k-NN 3.x drops them from it in an index with
    `index.knn`, "derived source": this tells the graph's bytes from that saving), on
    Elasticsearch the graph over int8-quantized text vectors (`int8_hnsw`, its 8.x default)."""
    variants = {"no_graph": index_body(dialect, dims, encoder_key, graph=False),
                "graph": index_body(dialect, dims, encoder_key, graph=True)}
    if dialect.name == "opensearch":
        variants["graph_vectors_in_source"] = copy.deepcopy(variants["graph"])
        variants["graph_vectors_in_source"]["settings"]["index.knn.derived_source.enabled"] = False
    if dialect.name == "elasticsearch":
        variants["int8_hnsw"] = copy.deepcopy(variants["graph"])
        variants["int8_hnsw"]["mappings"]["properties"][VECTOR_FIELD]["index_options"][
            "type"] = "int8_hnsw"
    return variants


def exact_script(engine, body: dict) -> bool:
    """Whether a kNN search of an index mapped by `body` needs k-NN's exact scoring script:
    OpenSearch refuses a knn query on an index without k-NN (Elasticsearch's `flat` vectors
    take one and score every vector)."""
    return engine.dialect.name == "opensearch" and not has_graph(body)


def knn_bodies(engine, body: dict, vectors: np.ndarray, k: int) -> list[dict]:
    """The recall stage's kNN search for each query vector, `k` nearest by text_vector (exact
    by script where `exact_script`)."""
    bodies = recall_bodies(engine, [""] * len(vectors), Recall(0, k), vectors)
    if exact_script(engine, body):
        for search, vector in zip(bodies, vectors, strict=True):
            search["query"] = {"script_score": {"query": {"match_all": {}}, "script": {
                "source": "knn_score", "lang": "knn", "params": {
                    "field": VECTOR_FIELD, "query_value": [float(x) for x in vector],
                    "space_type": "cosinesimil"}}}}
    return bodies


def recall_at(hits: list[list[str]], exact: np.ndarray, row: dict[str, int], k: int) -> float:
    """Mean share of each query's first `k` hits that are among its `k` nearest by exact cosine
    (`exact`: queries x documents; a hit tying the k-th cosine counts)."""
    kth = -np.partition(-exact, k - 1, axis=1)[:, k - 1] - 1e-6
    return float(np.mean([sum(exact[q, row[d]] >= kth[q] for d in ids[:k]) / k
                          for q, ids in enumerate(hits)]))


def knn_figures(engine, variants: dict[str, dict], vectors: np.ndarray, exact: np.ndarray,
                row: dict[str, int]) -> dict[str, dict]:
    """Per variant (its index GRAPH_INDEX + name): the recall@K of its kNN search for each K in
    KS, and the p50 of one search for each K in LATENCY_KS (the variants in turn per query, so
    drift hits all alike)."""
    out: dict[str, dict] = {}
    for name, body in variants.items():
        out[name] = {"knn_search": "hnsw" if has_graph(body) else "exact, knn_score script"
                     if exact_script(engine, body) else "exact, knn query over flat vectors"}
        for k in KS:
            responses = engine.msearch(GRAPH_INDEX + name, knn_bodies(engine, body, vectors, k))
            hits = [[h["fields"][ID_FIELD][0] for h in r["hits"]["hits"]] for r in responses]
            out[name][f"recall@{k}"] = round(recall_at(hits, exact, row, k), 4)
    runs = [(name, k) for k in LATENCY_KS for name in variants]
    bodies = {(name, k): knn_bodies(engine, variants[name], vectors, k) for name, k in runs}
    ms: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    for _ in range(LATENCY_ROUNDS):
        for i in range(len(vectors)):
            for name, k in runs:
                started = time.perf_counter()
                engine.search(GRAPH_INDEX + name, bodies[name, k][i])
                ms[name, k].append((time.perf_counter() - started) * 1000)
    for (name, k), times in ms.items():
        out[name][f"knn{k}_p50_ms"] = round(float(np.percentile(times, 50)), 2)
    return out


def vs_no_graph(figures: dict[str, dict]) -> dict[str, dict]:
    """Each variant's figures over the index without the graph's, as built and merged."""
    base, p50s = figures["no_graph"], [f"knn{k}_p50_ms" for k in LATENCY_KS]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {name: {**{k: ratio(f[k], base[k])
                      for k in ("docs_per_s", "searchable_s", "store_bytes", *p50s)},
                   **{f"merged_{k}": ratio(f["merged"][k], base["merged"][k])
                      for k in ("forcemerge_s", "store_bytes", *p50s)}}
            for name, f in figures.items() if name != "no_graph"}


def graph_section(engine, docs: list[dict], text_vectors: np.ndarray,
                  query_vectors: np.ndarray, encoder_key: str) -> dict:
    """`docs` (vectors on) into each of `graph_variants`, the figures of each (the module's
    docstring) and their ratios to no graph; the indices are deleted after."""
    variants = graph_variants(engine.dialect, text_vectors.shape[1], encoder_key)
    exact = (query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)) @ (
        text_vectors / np.linalg.norm(text_vectors, axis=1, keepdims=True)).T
    row = {d["id"]: i for i, d in enumerate(docs)}
    figures: dict[str, dict] = {}
    try:
        for name, body in variants.items():
            props = body["mappings"]["properties"]
            figures[name] = {"settings": body["settings"],
                             "vectors": {f: props[f] for f in ("title_vector", VECTOR_FIELD)},
                             **bulk_only(engine, GRAPH_INDEX + name, body, docs),
                             **on_disk(engine, GRAPH_INDEX + name)}
            print(name, figures[name], flush=True)
        for name, found in knn_figures(engine, variants, query_vectors, exact, row).items():
            figures[name].update(found)
        for name in variants:
            figures[name]["merged"] = force_merge(engine, GRAPH_INDEX + name)
        for name, found in knn_figures(engine, variants, query_vectors, exact, row).items():
            del found["knn_search"]
            figures[name]["merged"].update(found)
    finally:
        for name in variants:
            if engine.index_exists(GRAPH_INDEX + name):
                engine.delete_index(GRAPH_INDEX + name)
    return {"products": len(docs), "queries": len(query_vectors), "variants": figures,
            "vs_no_graph": vs_no_graph(figures)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--sections", type=lambda v: v.split(","), default=list(SECTIONS),
                    help="Comma-separated, of encoder and graph (default both).")
    ap.add_argument("--limit", type=int, help="Products to index (default: the catalogue).")
    ap.add_argument("--sample", type=int, default=2000,
                    help="Products for the encoder comparison (default 2000).")
    ap.add_argument("--out", type=Path,
                    help="Default: bench/results/indexing[_SECTION][_FLAVOR].json.")
    args = ap.parse_args()
    if set(args.sections) - set(SECTIONS):
        ap.error(f"--sections takes {', '.join(SECTIONS)}, not {','.join(args.sections)}")

    settings = load_settings(url=args.url, flavor=args.flavor)
    engine = app.connect_engine(settings, timeout=TIMEOUT)
    encoder = app.load_encoder(settings)
    sections = [s for s in SECTIONS if s in args.sections]
    result: dict = {"sections": sections,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "encoder": encoder.name, "engine": engine.transport.flavor}
    if "encoder" in sections:
        sample = [doc for _, doc in catalogue_documents(args.sample)]
        tokens = {"title": encoder.token_counts([d["title"] for d in sample]),
                  "title_and_description": encoder.token_counts([text_of(d) for d in sample])}
        result["tokens_per_text_sample"] = {k: {"mean": round(float(np.mean(v)), 1),
                                                "p90": float(np.percentile(v, 90))}
                                            for k, v in tokens.items()}
        result.update(encoder_section(engine, settings, encoder, args.limit, sample))
    if "graph" in sections:
        docs = [doc for _, doc in catalogue_documents(args.limit)]
        text_vectors = with_vectors(docs, CachedEncoder(encoder, EmbeddingCache(
            settings.home / "cache")))  # esrank's embedding cache: vectors already computed
        result["graph"] = graph_section(engine, docs, text_vectors,
                                        encoder.encode(judged_queries()), encoder.key)
    name = "_".join(["indexing", *sections] if len(sections) < len(SECTIONS) else ["indexing"])
    write_result(result, args.out or result_path(name, args))


if __name__ == "__main__":
    main()
