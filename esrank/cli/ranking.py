"""esrank search: one query through the ranking pipeline."""

from __future__ import annotations

import uuid

import click

from esrank.cli.common import app_of, emit, shopper_options


@click.command("search")
@click.argument("query")
@click.option("--size", default=10, show_default=True)
@click.option("--model", "which", metavar="CONFIG",
              help="'active' (the live model; BM25 when none), 'bm25', a model name, or a "
                   "fused baseline: 'knn', 'rrf', 'linear' (ESRANK_LINEAR_WEIGHT). "
                   "Default: what the sidecar serves a request that names none: the "
                   "configured experiment's arm (ESRANK_SERVE__EXPERIMENT__*), else 'active'. "
                   "+mmrL and +capN add the diversity stage, e.g. active+cap2 "
                   "(docs/diversity.md).")
@click.option("--window", type=int, help="Rescore window (default: ESRANK_RESCORE_WINDOW, 100).")
@click.option("--features", is_flag=True, help="With --json: each hit's feature values.")
@click.option("--show-requests", is_flag=True,
              help="Also print the engine requests that served the answer (recall msearch, "
                   "rescore clause with its params), to send from an application directly.")
@click.option("--rerank", "rerank_top", default=0, show_default=True, metavar="N",
              help="Rerank the top N with the cross-encoder (ESRANK_CROSS_ENCODER).")
@shopper_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def search_cmd(ctx: click.Context, query: str, size: int, which: str, window: int | None,
               features: bool, show_requests: bool, rerank_top: int, shopper,
               as_json: bool) -> None:
    """Search the catalogue: BM25 (title, description, supplier, attributes), then the
    model rescoring the top --window hits; with --user/--brand/--price-band, for that shopper
    (a model with personal features uses them; without, the shopper is anonymous)."""
    from esrank.personal.serving import served_search

    result, served = served_search(app_of(ctx), query, which, unit=uuid.uuid4().hex, size=size,
                                   window=window, features=features, rerank=rerank_top,
                                   shopper=shopper, requests=show_requests)
    emit(result.to_dict(), as_json, search_text(result, served))


def search_text(result, served: dict | None = None) -> str:
    """A search's answer as text; `served` says how (an experiment's arm)."""
    from esrank.core.query_text import MAX_QUERY_TERMS

    served = served or {}
    arm = (f" (experiment {served['experiment']}, arm {served['arm'] or 'interleaved'})"
           if "experiment" in served else "")
    text = f"ranked by {result.ranker}{arm}" + (f" (DEGRADED: {result.degraded})"
                                                if result.degraded else "")
    if result.dropped_terms:
        text += (f"\nthe query was cut to its first {MAX_QUERY_TERMS} terms "
                 f"({result.dropped_terms} dropped): {result.query!r}")
    rows = [f"{'#':>3}  {'score':>7}  {'id':>10}  title"]
    rows += [f"{h.rank:>3}  {h.score:7.3f}  {h.doc_id:>10}  {h.title[:70]}" for h in result.hits]
    if result.requests is not None:
        import json

        rows += ["", "engine requests, in order:", json.dumps(result.requests, indent=2)]
    return text + "\n" + "\n".join(rows)


COMMANDS = (search_cmd,)
