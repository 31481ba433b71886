"""Training at scale: synthetic tables made from a real logged Chorus table (repeated with fresh
query ids and 1 % feature noise, bench/_synthetic.py) at 1M / 5M / 10M rows, written as
datasets; per size, wall time and peak RSS of (a) a plain XGBoost fit (rank:ndcg, depth 3, 100
rounds, hist, all cores), (b) `esrank train` in one process (CV + grid + final fit; its ratio to
the plain fit's own seconds) and (c) `esrank train --dask local:2` with the peak RSS of each
worker. With --chorus: the demo table's served CV in one process and with --dask local:2.

    flock /tmp/esrank-engine.lock python bench/training.py --sizes 1000000
    flock /tmp/esrank-engine.lock python bench/training.py --sizes 10000000 --skip single
    flock /tmp/esrank-engine.lock python bench/training.py --sizes --chorus
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

from esrank.learn.distributed import to_dataset
from esrank.learn.table import read_table

OUT = Path(__file__).parent / "results" / "training.json"
BASE = Path("/var/cache/esrank/demo/chorus_bm25.parquet")
DEMO = Path("/var/cache/esrank/demo/chorus.parquet")

PLAIN = """
import sys, time, numpy as np, xgboost as xgb
from esrank.learn.fit import dmatrix
from esrank.learn.distributed import to_dataset
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


def measure(rows: int, work: Path, skip: tuple[str, ...] = ()) -> dict:
    """One size: the plain fit, `esrank train` and --dask local:2 (but those in `skip`).
    The ratio is the whole train's wall time (its process: start, read, search, final fit,
    save) over the plain fit's own seconds (its DMatrix and 100 rounds, no start or read)."""
    dataset = work / f"d{rows}"
    made = synthetic_dataset(read_table(BASE), rows, dataset)
    plain = timed([sys.executable, "-c", PLAIN, str(dataset)])
    plain["fit_seconds"] = round(float(plain.pop("stdout")), 1)
    out = {**made, "plain_fit": plain}
    if "single" not in skip:
        out["esrank_train"] = esrank_train(dataset, work / f"m{rows}")
        out["ratio_to_plain_fit"] = round(out["esrank_train"]["seconds"]
                                          / plain["fit_seconds"], 2)
    if "dask" not in skip:
        out["dask_local2"] = esrank_train(dataset, work / f"k{rows}", "--dask", "local:2")
        out["dask_ratio_to_plain_fit"] = round(out["dask_local2"]["seconds"]
                                               / plain["fit_seconds"], 2)
    return out


def chorus(work: Path) -> dict:
    """The demo table's served CV in one process and with --dask local:2 (the table written
    as a dataset of ~2,000-row parts): the same folds, so the same model quality within noise."""
    dataset = to_dataset(read_table(DEMO), work / "chorus.d", part_rows=2_000)
    single = esrank_train(DEMO, work / "chorus_single")
    dask = esrank_train(dataset[0].parent, work / "chorus_dask", "--dask", "local:2")
    return {"table": str(DEMO), "parts": len(dataset), "single": single, "dask_local2": dask,
            "cv_difference": round(dask["cv"] - single["cv"], 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000, 10_000_000])
    ap.add_argument("--skip", nargs="*", choices=["single", "dask"], default=[],
                    help="Runs to leave out: `esrank train` in one process, or on Dask (a "
                         "size's figures merge with the JSON's, so they can run apart).")
    ap.add_argument("--chorus", action="store_true",
                    help="Also compare --dask local:2 with one process on the demo table.")
    args = ap.parse_args()
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.sizes:
            result.setdefault(f"rows_{rows}", {}).update(
                measure(rows, Path(tmp), tuple(args.skip)))
        if args.chorus:
            result["chorus"] = chorus(Path(tmp))
    write_result(result, OUT)


if __name__ == "__main__":
    main()
