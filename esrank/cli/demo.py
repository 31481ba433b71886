"""esrank demo: the whole loop (esrank.loop.demo), each step shown as its own command shows
it."""

from __future__ import annotations

import functools
import json
import sys

import click

from esrank.cli.catalogue import index_text, showing_rejections
from esrank.cli.common import app_of, settings_of
from esrank.cli.deploy import deploy_text
from esrank.cli.engine import up_text
from esrank.cli.evaluation import compare_text, evaluate_text
from esrank.cli.features import push_text
from esrank.cli.judgments import judging_text
from esrank.cli.learn import log_text, train_text
from esrank.cli.ranking import search_text


@click.command("demo")
@click.option("--limit", type=int, help="Index only this many products (default: all).")
@click.option("--reindex", is_flag=True,
              help="Index the catalogue even when the index is already current.")
@click.option("--query", default="bluetooth speaker", show_default=True)
@click.pass_context
def demo_cmd(ctx: click.Context, limit: int | None, reindex: bool, query: str) -> None:
    """The whole loop on the Chorus catalogue and its shopper judgments.

    engine -> index -> push features -> log (judged docs + the BM25 window) -> train
    (CV + grid) -> upload -> parity gate -> activate -> LLM grades for unjudged docs in the
    model's top 10, and an evaluation with them -> compare BM25 with the model (and write the
    comparison report, machine grades marked) -> search -> one sidecar /search. Files go to
    $ESRANK_HOME/demo.
    """
    from esrank.loop import demo
    from esrank.serve.server import search_once

    s = settings_of(ctx)
    steps = demo(app_of(ctx), limit=limit, reindex=reindex, query=query,
                 sidecar=functools.partial(search_once, s))
    with showing_rejections(as_json=False):
        for step in steps:
            click.echo(_TEXT[step.kind](step.value))
            if step.kind == "deploy" and not step.value[0].parity.passed:
                sys.exit(1)


def _sidecar_text(port: int, query: str, answer: dict) -> str:
    return (f"$ curl -s localhost:{port}/search -H 'Content-Type: application/json' -d "
            f"'{{\"query\": \"{query}\", \"size\": 3}}'  (esrank serve)\n"
            + json.dumps({k: answer[k] for k in ("ranker", "degraded", "took_ms")}
                         | {"hits": [f"{h['doc_id']} {h['title'][:60]}"
                                     for h in answer["hits"]]}, indent=2))


# how `esrank demo` shows each kind of step (esrank.loop.Step): as the command of that name
_TEXT = {
    "say": str, "engine": up_text, "index": index_text, "features": push_text,
    "log": log_text, "train": train_text, "deploy": lambda v: deploy_text(*v),
    "judge": judging_text, "evaluate": lambda v: evaluate_text(v, per_query=False),
    "compare": lambda v: compare_text(*v, push=False),
    "search": search_text, "sidecar": lambda v: _sidecar_text(*v),
}

COMMANDS = (demo_cmd,)
