"""Catalogue indexing throughput on the live engine: end to end vs. its two halves.

Runs, in one process on the same products: (a) the MiniLM title encoder alone, (b) bulk
indexing with precomputed vectors (engine only), (c) `index_catalogue` end to end, and prints
docs/s for each plus the ratios. Writes bench/results/indexing.json.

    python bench/indexing.py --limit 5000
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from _report import write_result

from esrank.catalogue import index_body, index_catalogue, read_products, to_document
from esrank.encoder import load_encoder
from esrank.engine import connect

ROOT = Path(__file__).resolve().parent.parent
CHORUS = ROOT / "esrank" / "data" / "chorus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "indexing.json")
    args = ap.parse_args()

    engine = connect(args.url)
    encoder = load_encoder()
    paths = sorted(CHORUS.glob("*.json.zip"))
    docs = [to_document(p) for _, p in zip(range(args.limit), read_products(paths), strict=False)]
    n = len(docs)

    t = time.perf_counter()
    vectors = encoder.encode([d["title"] for _, d in docs], batch_size=64)
    encode_s = time.perf_counter() - t

    index = "bench-bulk-only"
    if engine.index_exists(index):
        engine.delete_index(index)
    engine.create_index(index, index_body(engine.dialect, encoder.dims))
    for (_, doc), vec in zip(docs, vectors, strict=True):
        doc["title_vector"] = [round(float(x), 7) for x in vec]
    t = time.perf_counter()
    for start in range(0, n, args.batch_size):
        engine.bulk(index, docs[start:start + args.batch_size])
    engine.refresh(index)
    bulk_s = time.perf_counter() - t
    engine.delete_index(index)

    report = index_catalogue(engine, "bench-catalogue", paths, encoder,
                             batch_size=args.batch_size, limit=args.limit, progress=False)
    for old in engine.alias_targets("bench-catalogue"):
        engine.delete_index(old)

    result = {
        "products": n, "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "encoder": encoder.name,
        "encode_only_docs_per_s": round(n / encode_s, 1),
        "bulk_only_docs_per_s": round(n / bulk_s, 1),
        "end_to_end_docs_per_s": round(report.docs_per_second, 1),
        "end_to_end_seconds": round(report.seconds, 1),
        "bulk_only_vs_end_to_end": round((n / bulk_s) / report.docs_per_second, 2),
        "share_of_time_embedding": round(encode_s / (encode_s + bulk_s), 3),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
