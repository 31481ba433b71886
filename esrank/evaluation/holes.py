"""The unjudged docs the configurations rank high (an evaluation's holes), and grading them,
or given pairs, with the LLM judge."""

from __future__ import annotations

from pathlib import Path

from esrank.judgments.judging import JudgingReport, judge_into
from esrank.judgments.lists import read_judgments
from esrank.judgments.llm_judge import PROMPTS, pair_texts
from esrank.ranking.search import run_of, search_many


def holes(app, judgments: Path, configs, *, fmt: str | None = None, depth: int = 10,
          window: int | None = None) -> list[tuple[str, str]]:
    """(query, doc id) for each unjudged doc in the top `depth` of each configuration, for
    every judged query: the pairs an LLM judge fills in."""
    evaluator = app.evaluator(judgments, fmt)
    rankers = [app.ranker(w, window) for w in configs]
    encoder = app.query_encoder(rankers)
    found: dict[tuple[str, str], None] = {}
    for ranker in rankers:
        run = run_of(search_many(app.engine, app.settings.index, evaluator.queries, ranker,
                                 encoder, size=depth, source=False, reranker=app.reranker))
        for query in evaluator.queries:
            judged = evaluator.grades(query)
            found.update({(query, d): None for d in run.get(query, ())[:depth]
                          if d not in judged})
    return list(found)


def judge_llm(app, judgments: Path, output: Path, *, holes_only: bool = False,
              configs=("bm25", "active"), fmt: str | None = None, depth: int = 10,
              calibration=None, limit: int | None = None, progress: bool = True,
              **llm) -> JudgingReport:
    """Grade with the LLM judge the pairs of `judgments` (their grades ignored), or with
    `holes_only` the unjudged docs that `configs` rank in their top `depth` for its queries;
    write the machine grades to `output` (esrank.judgments.judging.judge_into). `llm`
    overrides the judge's settings (endpoint, model, prompt, concurrency; None keeps one)."""
    c = app.settings.llm.model_copy(update={k: v for k, v in llm.items() if v is not None})
    wanted = (holes(app, judgments, configs, fmt=fmt, depth=depth) if holes_only
              else [(j.query, j.doc_id) for j in read_judgments(judgments, fmt)])
    todo, missing = pair_texts(app.engine, app.settings.index, wanted)
    return judge_into(todo, missing, lambda: app.judge_backend(c), output,
                      prompt=PROMPTS[c.prompt], calibration=calibration, limit=limit,
                      progress=progress, workers=c.concurrency if c.endpoint else 1,
                      index=app.settings.index)
