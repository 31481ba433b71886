"""Training at scale: synthetic tables made from a real logged Chorus table (repeated with fresh
query ids and 1 % feature noise, bench/_synthetic.py) at 1M / 5M / 10M rows, written as
datasets; per size, wall time and peak RSS of (a) a plain XGBoost fit (rank:ndcg, depth 3, 100
rounds, hist, all cores), (b) `esrank train` in one process (CV + grid + final fit; its ratio to
the plain fit's own seconds) and (c) `esrank train --dask local:2` with the peak RSS of each worker.

    flock /tmp/esrank-engine.lock python bench/training.py --sizes 1000000
Writes bench/results/training.json (merged per size, so sizes can run separately).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import write_result
from _synthetic import synthetic_dataset

from esrank.learn.table import read_table

OUT = Path(__file__).parent / "results" / "training.json"
BASE = Path("/var/cache/esrank/demo/chorus_bm25.parquet")

PLAIN = """
import sys, time, numpy as np, xgboost as xgb
from esrank.learn.fit import dmatrix
from esrank.learn.table import read_table
m = read_table(sys.argv[1])
t = time.monotonic()
dm = dmatrix(m, np.arange(len(m)), {})
xgb.train({"objective": "rank:ndcg", "max_depth": 3, "tree_method": "hist"}, dm, 100)
print(time.monotonic() - t)
"""

def timed(command: list[str]) -> dict:
    """Wall seconds and peak RSS of a child process (GNU time's %M; the Dask workers are its
    children's children: train_dask reports theirs)."""
    started = time.monotonic()
    run = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True,
                         text=True, check=True)
    return {"seconds": round(time.monotonic() - started, 1),
            "peak_rss_mb": round(int(run.stderr.strip().splitlines()[-1]) / 1024),
            "stdout": run.stdout}


def esrank_train(dataset: Path, out: Path, *extra: str) -> dict:
    result = timed([sys.executable, "-m", "esrank.cli", "train", str(dataset), "-o", str(out),
                    "--json", *extra])
    data = json.loads(result.pop("stdout"))
    return {**result, "cv": data["cv"]["mean"], "plan": data["plan"], "timing": data["timing"],
            "params": data["params"], "training_rows": data["training_rows"]}


def measure(rows: int, work: Path, single: bool = True) -> dict:
    """One size: the plain fit, `esrank train` (unless not `single`) and --dask local:2.
    The ratio is the whole train's wall time (its process: start, read, search, final fit,
    save) over the plain fit's own seconds (its DMatrix and 100 rounds, no start or read)."""
    dataset = work / f"d{rows}"
    made = synthetic_dataset(read_table(BASE), rows, dataset)
    plain = timed([sys.executable, "-c", PLAIN, str(dataset)])
    plain["fit_seconds"] = round(float(plain.pop("stdout")), 1)
    out = {**made, "plain_fit": plain}
    if single:
        out["esrank_train"] = esrank_train(dataset, work / f"m{rows}")
        out["ratio_to_plain_fit"] = round(out["esrank_train"]["seconds"]
                                          / plain["fit_seconds"], 2)
    out["dask_local2"] = esrank_train(dataset, work / f"k{rows}", "--dask", "local:2")
    out["dask_ratio_to_plain_fit"] = round(out["dask_local2"]["seconds"]
                                           / plain["fit_seconds"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    ap.add_argument("--no-single", action="store_true",
                    help="Skip `esrank train` in one process (the plain fit and Dask only).")
    args = ap.parse_args()
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.sizes:
            result[f"rows_{rows}"] = measure(rows, Path(tmp), not args.no_single)
    write_result(result, OUT)


if __name__ == "__main__":
    main()
