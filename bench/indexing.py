"""Catalogue indexing as `esrank index` does it: both vectors per product, the default
encoder, the embedding cache cold and warm; against the NumPy backend, ONNX fp32 and
sentence-transformers in the same run.

On the live engine, in one process:
- the whole catalogue (or --limit products) through `index_catalogue` with the default
  encoder (ESRANK_ENCODER__*; on a CPU: ONNX Runtime int8) behind an empty cache (cold), then
  again with the cache it filled (warm): docs/s end to end;
- bulk only: the same documents with precomputed vectors (what the engine alone takes);
- on a --sample of products, embedding both texts of each: docs/s of the default encoder,
  ONNX fp32, NumPy fp32 and sentence-transformers (when installed), as ratios, and the
  cosine of the default's vectors to fp32's;
- NumPy end to end on the sample (cold), the backend the batch commands used before.
Writes bench/results/indexing[_FLAVOR].json.

    python bench/indexing.py [--limit N] [--sample 2000] [--flavor elasticsearch]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from _chorus import catalogue_documents, catalogue_files
from _report import engine_options, result_path, write_result

from esrank.app import connect_engine
from esrank.catalogue.index import index_body, index_catalogue
from esrank.catalogue.products import text_of
from esrank.core.settings import load_settings
from esrank.models.embed_cache import CachedEncoder, EmbeddingCache
from esrank.models.encoder import load_encoder, model_dir

ALIAS = "bench-catalogue"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--limit", type=int, help="Products to index (default: the catalogue).")
    ap.add_argument("--sample", type=int, default=2000,
                    help="Products for the encoder comparison (default 2000).")
    ap.add_argument("--out", type=Path, help="Default: bench/results/indexing[_FLAVOR].json.")
    args = ap.parse_args()

    settings = load_settings(url=args.url, flavor=args.flavor)
    engine = connect_engine(settings)
    encoder = load_encoder(settings)
    paths = catalogue_files()
    sample = [doc for _, doc in catalogue_documents(args.sample)]
    tokens = {"title": encoder.token_counts([d["title"] for d in sample]),
              "title_and_description": encoder.token_counts([text_of(d) for d in sample])}
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "encoder": encoder.name, "engine": engine.transport.flavor,
        "tokens_per_text_sample": {k: {"mean": round(float(np.mean(v)), 1),
                                       "p90": float(np.percentile(v, 90))}
                                   for k, v in tokens.items()}}

    with tempfile.TemporaryDirectory() as cache_dir:
        cached = CachedEncoder(encoder, EmbeddingCache(Path(cache_dir)))
        result["cold_cache"] = index_run(engine, paths, cached, args.limit)
        print("cold", result["cold_cache"], flush=True)
        result["warm_cache"] = index_run(engine, paths, cached, args.limit)
        print("warm", result["warm_cache"], flush=True)
        result["cache_bytes"] = cached.cache.size_bytes
        result["warm_vs_cold"] = round(result["warm_cache"]["docs_per_s"]
                                       / result["cold_cache"]["docs_per_s"], 2)

        # bulk only: the cached vectors, so no embedding at all
        docs = [doc for _, doc in catalogue_documents(args.limit or None)]
        index = "bench-bulk-only"
        if engine.index_exists(index):
            engine.delete_index(index)
        engine.create_index(index, index_body(engine.dialect, encoder.dims))
        vectors = cached.encode(texts_of(docs))
        for doc, title, text in zip(docs, vectors[:len(docs)], vectors[len(docs):],
                                    strict=True):
            doc["title_vector"] = title.astype(np.float64).round(7).tolist()
            doc["text_vector"] = text.astype(np.float64).round(7).tolist()
        started = time.perf_counter()
        for i in range(0, len(docs), 256):
            engine.bulk(index, [(d["id"], d) for d in docs[i:i + 256]])
        engine.refresh(index)
        result["bulk_only_docs_per_s"] = round(len(docs) / (time.perf_counter() - started), 1)
        engine.delete_index(index)

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
            Path(cache_dir))), args.sample)
    result["numpy_end_to_end_sample"] = numpy_run
    result["cold_vs_numpy_end_to_end"] = round(result["cold_cache"]["docs_per_s"]
                                               / numpy_run["docs_per_s"], 2)
    write_result(result, args.out or result_path("indexing", args))


if __name__ == "__main__":
    main()
