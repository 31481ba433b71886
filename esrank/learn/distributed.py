"""Training on a Dask cluster (`esrank train --dask`): XGBoost's Dask training (rank:ndcg with
query ids) over a dataset folder whose parts (esrank.learn.table.write_part; `to_dataset`
writes one from a table file) are read on the workers, one partition per part, never the
whole table in one process.

The search is the one a table in this process gets (esrank.learn.search: same plan, same
folds, since they follow the dataset's query order); serving CV predicts per partition and
scores each held-out query there, so only per-query metrics come back. The artifact is the
same model.json + meta.json. Not here: --personal, --base, --normalize, --early-stopping.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import groupby
from pathlib import Path

import numpy as np

from esrank.core.errors import InputError
from esrank.core.files import check_new_folder
from esrank.learn.artifact import ModelArtifact
from esrank.learn.fit import (
    CANDIDATE_SETS,
    CONDENSED,
    METRIC,
    TrainParams,
    query_folds,
    query_shares,
    served_values,
)
from esrank.learn.search import plan_for, served_evaluation
from esrank.learn.served import judged_evaluator
from esrank.learn.table import FeatureMatrix, table_parts, write_part
from esrank.learn.train import TrainResult, _meta, _summary, grid_of, select_and_fit, timing_of

ROW_COLUMNS = ("grade", "qid", "fold", "share", "rank", "judged", "topic", "doc_id")


@contextlib.contextmanager
def cluster_client(address: str) -> Iterator:
    """A distributed.Client: of a scheduler at `address`, or of a LocalCluster for
    local:N[:T] (N workers of T threads, 1 unless said), closed on exit."""
    from distributed import Client, LocalCluster

    if not address.startswith("local:"):
        with Client(address) as client:
            yield client
        return
    workers, _, threads = address.removeprefix("local:").partition(":")
    if not workers.isdigit() or not (threads or "1").isdigit():
        raise InputError(f"--dask {address!r}: expected a scheduler address or local:N[:T]")
    with (LocalCluster(n_workers=int(workers), threads_per_worker=int(threads or 1),
                       dashboard_address=None) as cluster, Client(cluster) as client):
        yield client


def part_queries(path: str) -> dict:
    """A part's feature set, features, queries in order (its rows grouped by query) and
    hash, read on a worker; "error" says what is wrong with it."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["qid"])
    raw = (pq.read_schema(path).metadata or {}).get(b"esrank")
    if raw is None:
        return {"error": "not an esrank training table (no esrank metadata)"}
    meta = json.loads(raw)
    if "first_pass_rank" not in pq.read_schema(path).names:
        return {"error": "no first-pass ranks (logged with --window 0): --dask needs the "
                         "served window to score"}
    queries = [q for q, _ in groupby(table.column("qid").to_pylist())]
    if len(queries) != len(set(queries)):
        return {"error": "its rows are not grouped by query"}
    return {"meta": meta, "queries": queries,
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def read_part(path: str, folds: np.ndarray, shares: np.ndarray, first_query: int, *,
              names: Sequence[str], exclude: Sequence[str]):
    """One part as a partition: served feature values, then ROW_COLUMNS (`qid`: the query's
    number in the dataset; `fold`, `share`: the query's, given in part order)."""
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"esrank"])
    values = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]
                             ).astype(np.float32)
    for name in exclude:
        values[:, list(names).index(name)] = np.nan
    qids = np.asarray(table.column("qid").to_pylist(), dtype=object)
    number = np.cumsum(np.r_[True, qids[1:] != qids[:-1]]) - 1
    frame = pd.DataFrame(served_values(values, names, {}), columns=list(names))
    frame["grade"] = table.column("grade").to_numpy().astype(np.int32)
    frame["qid"] = number + first_query
    frame["fold"], frame["share"] = folds[number], shares[number].astype(np.float32)
    frame["rank"] = table.column("first_pass_rank").to_numpy()
    frame["judged"] = table.column("judged").to_numpy(zero_copy_only=False)
    frame["topic"] = qids if meta.get("shoppers") else table.column("query").to_pylist()
    frame["doc_id"] = table.column("doc_id").to_pylist()
    return frame


def served_part(frame, booster, names: Sequence[str], rounds: Sequence[int]):
    """Per held-out query of a partition: NDCG@10 (standard, condensed) of the first pass
    and of the booster's first `r` rounds for each `r` of `rounds`."""
    import pandas as pd
    import xgboost as xgb

    columns = ["bm25", "bm25_c", *(f"{k}{r}" for r in rounds for k in ("m", "c"))]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    values = frame[list(names)].to_numpy(np.float32)
    matrix = FeatureMatrix("partition", tuple(names), tuple(frame["qid"].astype(str)),
                           tuple(frame["topic"]), tuple(frame["doc_id"]),
                           tuple(int(g) for g in frame["grade"]), values,
                           tuple(int(r) for r in frame["rank"]), tuple(frame["judged"]))
    rows, evaluator = np.arange(len(frame)), judged_evaluator(matrix)
    dm = xgb.DMatrix(values, feature_names=list(names))
    views = [("bm25", None), *((r, booster.predict(dm, iteration_range=(0, r)))
                               for r in rounds)]
    out = {}
    for label, scores in views:
        per_query = served_evaluation(matrix, rows, scores, evaluator)[0].per_query
        standard, condensed = ("bm25", "bm25_c") if label == "bm25" else (f"m{label}",
                                                                          f"c{label}")
        out[standard] = {q: v[METRIC] for q, v in per_query.items()}
        out[condensed] = {q: v[CONDENSED] for q, v in per_query.items()}
    return pd.DataFrame(out)[columns]


def to_dataset(matrix: FeatureMatrix, folder: Path, part_rows: int = 100_000) -> list[Path]:
    """Write a table as a dataset folder for --dask: parts of about `part_rows` rows, each
    holding whole query groups (the table's rows grouped by query, in order).

    >>> to_dataset(read_table(Path("chorus.parquet")), Path("chorus.d"))  # doctest: +SKIP
    """
    starts = [i for i in range(len(matrix)) if i == 0 or matrix.qids[i] != matrix.qids[i - 1]]
    parts, begin = [], 0
    for start in [*starts[1:], len(matrix)]:
        if start - begin >= part_rows or start == len(matrix):
            parts.append(write_part(matrix.take(range(begin, start)), folder, len(parts)))
            begin = start
    return parts


def peak_rss_mb() -> int:
    """This process's peak resident memory (run on each worker)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class DaskData:
    """A dataset's parts as a Dask dataframe held by the workers (esrank.learn.search.Data)."""

    served = True

    def __init__(self, client, frame, names: Sequence[str], device: str):
        self.client, self.frame, self.names, self.device = client, frame, list(names), device
        self._first: dict[tuple[int, float], tuple[float, float]] = {}

    def fit(self, fold: int | None, share: float, params: TrainParams, candidates: str):
        import xgboost.dask as dxgb

        f = self.frame
        keep = (f["fold"] != (-1 if fold is None else fold)) & (f["share"] < share)
        if candidates == "window":
            keep &= f["rank"] > 0
        rows = f[keep]
        # a worker's partitions come in partition order: its qids ascend, groups are whole
        dtrain = dxgb.DaskDMatrix(self.client, rows[self.names], rows["grade"], qid=rows["qid"])
        booster = dxgb.train(self.client, params.xgb(self.device), dtrain,
                             num_boost_round=params.num_rounds)["booster"]
        booster.set_attr(best_iteration=str(params.num_rounds - 1))
        return booster

    def score(self, booster, fold: int, share: float, rounds: Sequence[int]
              ) -> dict[int, tuple]:
        import pandas as pd

        columns = ["bm25", "bm25_c", *(f"{k}{r}" for r in rounds for k in ("m", "c"))]
        test = self.frame[(self.frame["fold"] == fold) & (self.frame["share"] < share)]
        per_query = test.map_partitions(
            served_part, booster, self.names, tuple(rounds),
            meta=pd.DataFrame({c: pd.Series(dtype=float) for c in columns})).compute()
        self._first[fold, share] = (float(per_query["bm25"].mean()),
                                    float(per_query["bm25_c"].mean()))
        return {r: (float(per_query[f"m{r}"].mean()), float(per_query[f"c{r}"].mean()), {})
                for r in rounds}

    def first_pass(self, fold: int, share: float) -> tuple[float, float]:
        return self._first[fold, share]


def scan(client, dataset: Path) -> tuple[list[str], list[dict]]:
    """The dataset's parts and what each holds (`part_queries`, on the workers); InputError
    when a part is not a table, names another feature set or splits a query with another."""
    if not Path(dataset).is_dir():
        raise InputError("--dask reads a dataset folder of part files (write one with "
                         "esrank.learn.distributed.to_dataset)", source=str(dataset))
    paths = [str(p) for p in table_parts(dataset)]
    infos = client.gather(client.map(part_queries, paths, pure=False))
    seen: dict[str, str] = {}
    for path, info in zip(paths, infos, strict=True):
        if "error" in info:
            raise InputError(info["error"], source=path)
        if (info["meta"]["feature_set"], info["meta"]["feature_names"]) != (
                infos[0]["meta"]["feature_set"], infos[0]["meta"]["feature_names"]):
            raise InputError(f"logged with {info['meta']['feature_set']}, not "
                             f"{infos[0]['meta']['feature_set']} as {Path(paths[0]).name} is",
                             source=path)
        for query in info["queries"]:
            if query in seen:
                raise InputError(f"query {query!r} is split between {Path(seen[query]).name} "
                                 f"and {Path(path).name}: each part must hold whole query "
                                 "groups", source=str(dataset))
            seen[query] = path
    return paths, infos


def dataset_frame(paths: list[str], infos: list[dict], names: Sequence[str],
                  exclude: Sequence[str], k: int, seed: int):
    """The parts as one Dask dataframe (a partition per part, read on the workers), folds
    and shares drawn over the dataset's queries as `LocalData` draws them, persisted."""
    import dask.dataframe as dd

    queries = [q for info in infos for q in info["queries"]]
    fold_of, share_of = query_folds(queries, k, seed), query_shares(queries, seed)
    firsts = np.cumsum([0] + [len(i["queries"]) for i in infos[:-1]])
    frame = dd.from_map(
        read_part, paths, [np.array([fold_of[q] for q in i["queries"]], np.int8) for i in infos],
        [np.array([share_of[q] for q in i["queries"]]) for i in infos], [int(f) for f in firsts],
        names=list(names), exclude=list(exclude), meta=_empty(names))
    return frame.persist()


def _empty(names: Sequence[str]):
    """The columns and types `read_part` returns."""
    import pandas as pd

    types = {**dict.fromkeys(names, np.float32), "grade": np.int32, "qid": np.int64,
             "fold": np.int8, "share": np.float32, "rank": np.int32, "judged": bool,
             "topic": "str", "doc_id": "str"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in types.items()})


def train_dask(table: Path, out_dir: Path, *, address: str, params: TrainParams | None = None,
               folds: int | None = None, search: bool = True, device: str = "auto",
               normalizer: str | None = None, exclude: Sequence[str] = (),
               candidates: str = "auto", personal: Sequence[str] = (), base: Path | None = None,
               parallel_trees: int | None = None, progress: bool = False) -> TrainResult:
    """`esrank.learn.train.train_file` on a Dask cluster (`cluster_client`'s `address`):
    the dataset `table` read part by part on the workers, the same search and artifact."""
    params = params or TrainParams()
    if personal or base or normalizer or params.early_stopping:
        raise InputError("--dask trains without --personal, --base, --normalize and "
                         "--early-stopping: drop them or train in this process")
    started = time.monotonic()
    check_new_folder(out_dir)
    with cluster_client(address) as client:
        paths, infos = scan(client, table)
        meta = infos[0]["meta"]
        names = meta["feature_names"]
        unknown = [n for n in exclude if n not in names]
        if unknown:
            raise InputError(f"cannot exclude feature {unknown[0]!r}: {meta['feature_set']} "
                             f"has {', '.join(names)}")
        plan = plan_for(sum(len(i["queries"]) for i in infos), folds, parallel_trees)
        start = replace(params, parallel_trees=plan.parallel_trees)
        frame = dataset_frame(paths, infos, names, exclude, plan.folds, start.seed)
        data = DaskData(client, frame, names, "cpu" if device == "auto" else device)
        read = time.monotonic() - started
        tried, chosen, best, final = select_and_fit(
            data, grid_of(start, search), CANDIDATE_SETS if candidates == "auto"
            else (candidates,), plan, progress)
        rows = len(frame)
        workers = client.run(peak_rss_mb)
        trained = rows if best["candidates"] == "window+judged" else int(
            (frame["rank"] > 0).sum().compute())
    booster = final["booster"]
    timing = {**timing_of(tried, final["seconds"], read), "dask": address,
              "worker_peak_rss_mb": workers}
    described = {"table": str(Path(table).resolve()), "rows": rows,
                 "queries": plan.queries, "trained_rows": trained,
                 "sha256": hashlib.sha256("".join(i["sha256"] for i in infos).encode()
                                          ).hexdigest()[:16], "sha256_of": "the part files",
                 "cross_encoder": meta.get("cross_encoder"), "encoder": meta.get("encoder"),
                 "recall": meta.get("recall")}
    artifact = _meta(meta["feature_set"], names, chosen, best, tried, booster,
                     chosen.num_rounds - 1,
                     device=data.device, normalizers={}, exclude=exclude, personal=(),
                     base=None, plan=plan, timing=timing, data=described)
    ModelArtifact(out_dir, artifact, booster).save()
    return TrainResult(out_dir, chosen, best["candidates"], best["score"],
                       tuple(_summary(t) for t in tried), chosen.num_rounds - 1,
                       time.monotonic() - started, plan, timing)
