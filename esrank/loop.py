"""The whole loop on the Chorus catalogue and its shopper judgments, as one sequence of steps:
engine -> index -> push features -> log -> train -> upload (parity gate, activate) -> LLM
grades for the model's unjudged top docs -> evaluate -> compare -> search -> one sidecar
/search.

`demo` runs the steps lazily and yields each one's result as it is done, so a front door
shows progress between them (`esrank demo` prints each as the command of that name would):

>>> for step in demo(App(load_settings())):                           # doctest: +SKIP
...     print(step.kind)
say
engine
...
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esrank.app import CHORUS, App
from esrank.catalogue.recall import Recall
from esrank.core.stamps import COMPACT, utc
from esrank.deploy.reindex import index
from esrank.deploy.upload import upload
from esrank.evaluation.evaluate import compare, evaluate
from esrank.evaluation.holes import judge_llm
from esrank.features.parser import load_feature_sets
from esrank.features.sync import push_feature_sets
from esrank.learn.feature_log import log_table
from esrank.personal.serving import served_search
from esrank.ranking.fusion import FUSED

DEMO_HOLES = 20  # pairs the demo's LLM judge grades (0.7 s each on 2 CPU cores)
FEATURE_SET = Path("feature_sets/chorus.yaml")


@dataclass(frozen=True)
class Step:
    """One step's outcome. `kind` "say" is a line to show as it is; any other kind names the
    command whose result `value` is: "engine" (up's info), "index" (IndexReport), "features"
    (push results), "log" (LogResult), "train" (TrainResult), "deploy" (DeployReport, feature
    set name), "judge" (JudgingReport), "evaluate" (EvaluationRun), "compare" (the comparison's
    data, the page written), "search" (SearchResult), "sidecar" (the port `esrank serve` listens
    on, the query, the /search answer)."""

    kind: str
    value: Any


def demo(app: App, *, limit: int | None = None, reindex: bool = False,
         query: str = "bluetooth speaker", sidecar: Callable[[str], dict] | None = None
         ) -> Iterator[Step]:
    """The loop's steps on `app`, files under $ESRANK_HOME/demo. `limit` indexes only that
    many products; `reindex` indexes even when the index is current; `sidecar(query)`
    answers one /search through the sidecar (esrank.serve.server.search_once; None skips it).
    A deploy whose parity gate fails is the last step."""
    s = app.settings
    work = s.home / "demo"
    work.mkdir(parents=True, exist_ok=True)
    judgments = CHORUS / "judgments.csv"
    yield from _catalogue(app, limit, reindex)
    recall = Recall(s.rescore_window, s.recall_knn)
    yield Step("say", f"== 4. log features for every judgment and its candidates, {recall.label}"
                      " (the BM25 top N and the K nearest products)")
    yield Step("log", log_table(app, judgments, FEATURE_SET, work / "chorus.parquet"))
    yield Step("say", "== 5. train (query-grouped 5-fold CV, grid search)" + (
        " over the candidates and over BM25 alone; the better in served CV is served"
        if recall.knn else ""))
    artifact = yield from _train(work / "chorus.parquet", work / "models" / utc(COMPACT),
                                 recall)
    yield Step("say", "== 6. upload, parity gate, activate")
    fs, report = upload(app, artifact, FEATURE_SET)
    yield Step("deploy", (report, fs.name))
    if not report.parity.passed:
        return
    holes, page = work / "llm_holes.csv", work / "compare.html"
    yield from _judged(app, judgments, holes, page)
    yield Step("say", f"== 9. search: {query!r}")
    yield Step("search", served_search(app, query, unit=uuid.uuid4().hex)[0])
    if sidecar is not None:
        yield Step("say", "== 10. the sidecar: POST /search")
        yield Step("sidecar", (s.serve.port, query, sidecar(query)))
    yield Step("say", "== 11. look at it")
    yield Step("say", f"comparison report: {page}")
    yield Step("say", f"live comparison page: ESRANK_JUDGMENTS={judgments} esrank serve, then "
                      f"http://{s.serve.host}:{s.serve.port}/compare")


def _catalogue(app: App, limit: int | None, reindex: bool) -> Iterator[Step]:
    """Steps 1-3: the local engine, the catalogue indexed (unless it is current), the feature
    sets pushed."""
    from esrank.catalogue.index import index_is_current
    from esrank.engine.local import up

    s = app.settings
    if s.uses_local_engine:
        yield Step("say", f"== 1. local engine ({s.local_flavor})")
        yield Step("engine", up(app.local_engine(s.local_flavor), progress=True))
    yield Step("say", "== 2. index the Chorus catalogue")
    if not reindex and limit is None and index_is_current(app.engine, s.index, app.encoder.key):
        yield Step("say", f"{s.index} is already indexed with the current mapping and encoder "
                          "(--reindex to redo)")
    else:  # the demo catalogue replaces whatever the alias held: any size goes live
        yield Step("index", index(app, tuple(sorted(CHORUS.glob("*.json.zip"))), limit=limit,
                                  max_shrink=1.0))
    yield Step("say", "== 3. push the feature sets")
    yield Step("features", push_feature_sets(app.engine, load_feature_sets(s.feature_sets)))


def _train(table: Path, artifacts: Path, recall: Recall) -> Iterator[Step]:
    """Step 5: a model over the candidate set `recall` the table was logged over and, when it
    joins the nearest products, one over BM25 alone (the same rows, narrowed); returns the
    artifact of the one with the higher served CV (BM25 alone on a tie: the recall stage must
    earn its cost)."""
    from esrank.learn.table import read_table, write_table
    from esrank.learn.train import train_file

    tried = {recall.label: (table, artifacts / "recall")}
    if recall.knn:
        bm25 = Recall(recall.bm25)
        narrow = table.with_name(f"{table.stem}_bm25.parquet")
        write_table(read_table(table).narrowed(bm25), narrow, judgments_source=str(table))
        tried = {bm25.label: (narrow, artifacts / "bm25"), **tried}
    results = {}
    for label, (path, out) in tried.items():
        results[label] = train_file(path, out)
        yield Step("train", results[label])
    if len(results) == 1:
        return tried[recall.label][1]
    best = max(results, key=lambda label: results[label].cv_mean)
    yield Step("say", "served CV ndcg@10: " + ", ".join(
        f"{label} {r.cv_mean:.3f}" for label, r in results.items()) + f"; serving {best} ("
        + ("the recall stage beats BM25 alone)" if best == recall.label
           else "the nearest products do not beat BM25 alone here)"))
    return tried[best][1]


def _judged(app: App, judgments: Path, holes: Path, page: Path) -> Iterator[Step]:
    """Steps 7-8: LLM grades for the unjudged docs in the model's top 10, an evaluation with
    them (BM25, the fused baselines and the model), and BM25 compared with the model (the
    report marks the machine grades)."""
    yield Step("say", "== 7. LLM judgments: the unjudged docs in the model's top 10 (the "
                      f"first {DEMO_HOLES}), graded by the packaged SmolLM2-135M, then "
                      "evaluation with them")
    yield Step("say", "   (a weak judge: bench/llm_judge.py measures it at chance agreement "
                      "with people; the '+machine' columns show where machine grades were "
                      "used)")
    yield Step("judge", judge_llm(app, judgments, holes, holes_only=True, configs=("active",),
                                  limit=DEMO_HOLES))
    configs = ("bm25", *(FUSED if app.settings.recall_knn else ()), "active")
    yield Step("evaluate", evaluate(app, judgments, configs, machine=holes))
    yield Step("say", "== 8. compare BM25 with the model on every judged query, human grades "
                      "only (in-sample: bench/relevance.py has the cross-validated figures); "
                      "the report marks the machine grades")
    yield Step("compare", (compare(app, judgments, "bm25", "active", html=page, machine=holes),
                           page))

