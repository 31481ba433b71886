"""esrank index: product files into a fresh index behind the alias."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from esrank.app import CHORUS
from esrank.cli.common import app_of, emit


@click.command("index")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--alias", help="Index alias (default: ESRANK_INDEX, 'products').")
@click.option("--limit", type=int, help="Index at most this many products.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--allow-rejects", default=0, show_default=True, metavar="N",
              type=click.IntRange(min=0),
              help="Go live even though up to N products were rejected (default: any "
                   "rejection, a repeated id included, keeps the live index as it is).")
@click.option("--max-shrink", default=10.0, show_default=True, metavar="PERCENT",
              type=click.FloatRange(0, 100),
              help="Go live only if the build holds at least 100 - PERCENT % of the products "
                   "the alias serves now (100: any size).")
@click.option("--keep", default=1, show_default=True, metavar="N", type=click.IntRange(min=0),
              help="Earlier indices of the alias to keep after the move (to go back to).")
@click.option("--allow-encoder-change", is_flag=True,
              help="Re-embed an alias with other encoder weights even though active models "
                   "were logged with its current ones (their cosine features change live).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def index_cmd(ctx: click.Context, files: tuple[Path, ...], alias: str | None, limit: int | None,
              batch_size: int, allow_rejects: int, max_shrink: float, keep: int,
              allow_encoder_change: bool, as_json: bool) -> None:
    """Index products (JSON, JSONL or zips of them) with title and text embeddings.

    Builds a fresh index and moves the alias onto it when done; the previous index is kept
    (--keep). Bad products and repeated ids are listed with their id and reason. A build that
    indexed nothing, rejected more than --allow-rejects products or holds fewer products than
    --max-shrink allows is removed and never goes live: exit 1, the alias unchanged. One run
    per alias at a time: a second one exits 1 at once, naming the run that holds the alias.
    """
    from esrank.deploy.reindex import index

    if not files:
        raise click.UsageError("no product files given (the demo catalogue: esrank demo, or "
                               f"esrank index {CHORUS}/*.json.zip)")
    with showing_rejections(as_json):
        report = index(app_of(ctx), files, alias, batch_size=batch_size, limit=limit,
                                   allow_rejects=allow_rejects, keep=keep,
                                   progress=not as_json, max_shrink=max_shrink / 100,
                                   allow_encoder_change=allow_encoder_change)
    emit(report.to_dict(), as_json, index_text(report))


@contextlib.contextmanager
def showing_rejections(as_json: bool):
    """Show the report of a build that was refused for its rejections or its size (then the
    error goes on to exit 1)."""
    from esrank.catalogue.index import RejectedBuildError, ShrinkError

    try:
        yield
    except (RejectedBuildError, ShrinkError) as exc:
        emit({**exc.report.to_dict(), "error": str(exc)}, as_json, _rejections(exc.report))
        raise


def index_text(report) -> str:
    d = report.to_dict()
    return (f"indexed {d['indexed']} products into {d['index']} (alias {d['alias']}) in "
            f"{d['seconds']}s, {d['docs_per_second']} docs/s ({d['encoder']}); "
            f"rejected {len(d['rejected'])}; {d['replaced']} products served before; "
            f"kept {', '.join(d['kept']) or 'no earlier index'}" + _rejections(report))


def _rejections(report) -> str:
    return "".join(f"\n  rejected {r.doc_id} ({r.where}): {r.reason}" for r in report.rejected)


COMMANDS = (index_cmd,)
