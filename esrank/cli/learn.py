"""esrank log/train: the training table logged through the LTR plugin, and a ranker trained on
it."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import click

from esrank.cli.common import FORMATS, app_of, emit


@click.command("log")
@click.argument("judgments_file", metavar="JUDGMENTS", type=click.Path(path_type=Path),
                required=False)
@click.option("--feature-set", "feature_set_path", type=click.Path(path_type=Path),
              default=Path("feature_sets/chorus.yaml"), show_default=True)
@click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Training table: a .parquet file (a RankLib .txt is written beside it), or "
                   "any other name: a dataset folder written in parts as it goes, resumable "
                   "(re-run the same command after a failure: finished parts are kept).")
@click.option("--queries-per-request", default=16, show_default=True,
              help="Queries per msearch batch.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Concurrent msearch batches (the engine spreads them over its shards and "
                   "nodes); the table is the same whatever their number.")
@click.option("--part-size", default=500, show_default=True, type=click.IntRange(1),
              metavar="QUERIES", help="Query groups per part file of a dataset folder.")
@click.option("--window", type=int, metavar="N",
              help="Also log every doc of each query's BM25 top N, the window a model "
                   "rescores (unjudged ones as grade 0), with each row's first-pass rank: "
                   "what training selects on (default: ESRANK_RESCORE_WINDOW, 100; 0: judged "
                   "docs only).")
@click.option("--knn", type=int, metavar="K",
              help="Join each query's K nearest products (kNN over the catalogue's graph) to "
                   "its BM25 window: the recall stage a model trained on the table serves "
                   "(default: ESRANK_RECALL_KNN; 0: BM25 alone).")
@click.option("--sessions", is_flag=True,
              help="Learn from shoppers: JUDGMENTS is a UBI log (ndjson; omitted: the "
                   "engine's UBI indices). Each served search with an action is a query of its "
                   "own, its docs down to the last action graded by what was done (click 1, "
                   "cart 2, purchase 3), logged with the shopper params it was served with.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def log_cmd(ctx: click.Context, judgments_file: Path | None, feature_set_path: Path,
            fmt: str | None, output: Path, queries_per_request: int, workers: int,
            part_size: int, window: int | None, knn: int | None, sessions: bool,
            as_json: bool) -> None:
    """Log every feature for every judged (query, doc), and for the served window, through
    the LTR plugin.

    Pushes the feature set first (a no-op when stored). Missing values stay NaN in the table;
    judged docs absent from the index are listed and the command exits 1. A feature set with a
    cross-encoder param (feature_sets/chorus_ce.yaml) needs ESRANK_CROSS_ENCODER: it scores
    every logged doc, and the table records which cross-encoder did. Any output but a .parquet
    file is a dataset folder of parts (no RankLib text) that a re-run resumes (docs/learning.md).
    """
    from esrank.learn.feature_log import log_table

    if judgments_file is None and not sessions:
        raise click.UsageError("give a JUDGMENTS file (or --sessions for the engine's UBI log)")
    report = log_table(app_of(ctx), judgments_file, feature_set_path, output, fmt=fmt,
                       window=window, knn=knn, sessions=sessions, progress=not as_json,
                       queries_per_request=queries_per_request, workers=workers,
                       part_size=part_size)
    emit(report.to_dict(), as_json, log_text(report))
    if report.missing_docs:
        sys.exit(1)


def log_text(report) -> str:
    data = report.to_dict()
    over = f" over {report.candidates}" if report.candidates else ""
    parts = (f" ({data['parts']['written']} parts written, {data['parts']['skipped']} done "
             "before)" if report.parts else "")
    return (f"logged {data['rows']} rows of {report.feature_set}{over} in {data['seconds']}s "
            f"({data['judgments_per_second']} judgments/s) -> {report.table}{parts}"
            + "".join(f"\n  not in the index: {q!r} / {d}" for q, d in report.missing_docs))


@click.command("train")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Artifact directory (model.json + meta.json).")
@click.option("--objective", type=click.Choice(["rank:ndcg", "rank:pairwise"]),
              default="rank:ndcg", show_default=True)
@click.option("--folds", type=int,
              help="Query-grouped CV folds (default: 5, all scored; from 1,000 queries the "
                   "first of 5 only, a holdout).")
@click.option("--search/--no-search", default=True, show_default=True,
              help="Grid-search eta {0.05,0.1} x rounds {50,100} (4 configurations) by "
                   "serving CV.")
@click.option("--train-on", "candidates", type=click.Choice(["auto", "window", "window+judged"]),
              default="auto", show_default=True,
              help="The rows the model trains on: the served window's only, or also the "
                   "judged docs outside it; auto picks by serving CV.")
@click.option("--max-depth", default=3, show_default=True, help="Tree depth (without --search).")
@click.option("--rounds", default=100, show_default=True,
              help="Boosting rounds (without --search).")
@click.option("--early-stopping", default=0, show_default=True, metavar="N",
              help="Stop after N rounds without gain on a grouped validation split (0: off).")
@click.option("--normalize", type=click.Choice(["standard", "min_max"]),
              help="Train on normalized features; the plugin applies the same normalizers.")
@click.option("--exclude", multiple=True, metavar="FEATURE",
              help="A feature the model must not use (repeatable), e.g. the neural ones for a "
                   "without-neural model to compare; it keeps the feature set.")
@click.option("--personal", multiple=True, metavar="FEATURE",
              help="A shopper feature learned on top of the model without them (repeatable): "
                   "a shopper without it is ranked as that model ranks them.")
@click.option("--base", "base_path", type=click.Path(path_type=Path),
              help="With --personal: the deployed non-personal model (trained with --exclude "
                   "on the personal features) to keep as the first stage, so anonymous "
                   "shoppers get exactly its ranking.")
@click.option("--parallel-trees", type=int, metavar="N",
              help="Bagged trees per round (default: 4 below 1,000 queries, 1 from there).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--dask", "dask_address", metavar="ADDRESS",
              help="Train on a Dask cluster: a scheduler address, or local:N (a local cluster "
                   "of N workers, 1 thread each; local:N:T for T threads). TABLE must be a "
                   "dataset folder (part files of whole queries), read part by part on the "
                   "workers.")
@click.option("--json", "as_json", is_flag=True)
def train_cmd(table: Path, output: Path, objective: str, folds: int | None, search: bool,
              candidates: str, max_depth: int, rounds: int, early_stopping: int,
              normalize: str | None, exclude: tuple[str, ...], personal: tuple[str, ...],
              base_path: Path | None, parallel_trees: int | None, device: str,
              dask_address: str | None, as_json: bool) -> None:
    """Train an XGBoost ranker on a table from `esrank log`, selected by serving CV.

    Serving CV: per query-grouped fold, the model reorders each held-out query's served
    window (the logged first-pass ranks say which rows), and the ranking is scored on all of
    that query's judgments, NDCG@10 standard and condensed, as `esrank evaluate` does; BM25's
    order of the same windows is shown beside it. Every choice (grid, rows) is made on it.
    A bar counts the fits (off with --json or without a terminal).
    """
    from esrank.learn.distributed import train_dask
    from esrank.learn.train import TrainParams, train_file

    params = TrainParams(objective=objective, max_depth=max_depth, num_rounds=rounds,
                         early_stopping=early_stopping)
    result = (partial(train_dask, address=dask_address) if dask_address else train_file)(
        table, output, params=params, folds=folds, search=search, device=device,
        normalizer=normalize, exclude=exclude, candidates=candidates, personal=personal,
        base=base_path, parallel_trees=parallel_trees,
        progress=not as_json and sys.stderr.isatty())
    emit(result.to_dict(), as_json, train_text(result))


def train_text(result) -> str:
    data = result.to_dict()
    cv = data["cv"]
    text = f"{cv['view']} CV ndcg@10 {cv['mean']:.4f} (folds {cv['folds']})"
    if cv["condensed"]:
        text += (f"\n  condensed {cv['condensed']['mean']:.4f} (folds "
                 f"{cv['condensed']['folds']})\n  BM25 on the same windows "
                 f"{cv['bm25']['mean']:.4f}, condensed {cv['bm25_condensed']['mean']:.4f}")
    timing = data["timing"] or {}
    return text + (f"\ntrained on the {result.candidates} rows with {data['params']}; model -> "
                   f"{result.artifact} in {data['seconds']}s ({timing.get('search_fits')} "
                   f"search fits in {timing.get('search_fit_seconds')}s, the final fit "
                   f"{timing.get('final_fit')}s)")


COMMANDS = (log_cmd, train_cmd)
