"""esrank judgments agree/llm/calibrate/from-clicks: where judgment lists come from and how
far two of them agree."""

from __future__ import annotations

from pathlib import Path

import click

from esrank.cli.common import FORMATS, OutputFile, app_of, emit, weights_option


@click.group()
def judgments() -> None:
    """Judgment lists: agreement between sources, judgments from click logs, LLM judgments
    and their calibration."""


@judgments.command("agree")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--format-a", type=FORMATS, help="Format of A (default: from the extension).")
@click.option("--format-b", type=FORMATS, help="Format of B (default: from the extension).")
@click.option("--json", "as_json", is_flag=True)
def judgments_agree(a: Path, b: Path, format_a: str | None, format_b: str | None,
                    as_json: bool) -> None:
    """Agreement of two judgment lists on the (query, doc) pairs both judge.

    Cohen's kappa, quadratic-weighted kappa, Spearman and Kendall, overall and per query.
    """
    from esrank.judgments.agreement import agreement
    from esrank.judgments.lists import read_judgments

    report = agreement(read_judgments(a, format_a), read_judgments(b, format_b))
    keys = ("n", "exact", "kappa", "weighted_kappa", "spearman", "kendall")
    rows = [f"{'query':40} " + " ".join(f"{k:>14}" for k in keys),
            f"{'(all)':40} " + " ".join(f"{report[k]:>14.3f}" for k in keys)]
    rows += [f"{q[:40]:40} " + " ".join(f"{v[k]:>14.3f}" for k in keys)
             for q, v in sorted(report["per_query"].items())]
    emit(report, as_json, "\n".join(rows))


@judgments.command("llm")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                required=False)
@click.option("--format", "fmt", type=FORMATS, help="Format of PAIRS or --holes-of (default: "
              "the extension).")
@click.option("--holes-of", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead of PAIRS: the docs no one judged in the top --depth of each "
                   "--config, for every query of these judgments.")
@click.option("--config", "configs", multiple=True,
              help="With --holes-of: 'bm25', 'active' or a model name; repeatable (default: "
                   "bm25 and active).")
@click.option("--depth", default=10, show_default=True, help="With --holes-of: how deep.")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="Machine grades: a judgments CSV with each grade's provenance.")
@click.option("--endpoint", help="An OpenAI-compatible API base URL, e.g. "
              "http://localhost:8000/v1 (default: ESRANK_LLM__ENDPOINT; none: the local model).")
@click.option("--model", help="The endpoint's model name, or a local GGUF file (default: "
              "ESRANK_LLM__MODEL, else the packaged SmolLM2-135M).")
@click.option("--prompt", type=click.Choice(["grade", "yesno"]),
              help="The question asked (default: ESRANK_LLM__PROMPT, else grade).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Map scores onto the human scale with this file "
                   "(esrank judgments calibrate writes it).")
@click.option("--limit", type=click.IntRange(min=1), help="Grade only the first N pairs.")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Endpoint requests in flight "
              "(default: ESRANK_LLM__CONCURRENCY, else 8; the local model answers one at a "
              "time).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def judgments_llm(ctx: click.Context, pairs: Path | None, fmt: str | None,
                  holes_of: Path | None, configs: tuple[str, ...], depth: int, output: Path,
                  calibration: Path | None, limit: int | None, as_json: bool, **llm) -> None:
    """Grade (query, doc) pairs 0..3 with a language model: those of PAIRS (their grades are
    ignored), or with --holes-of the unjudged docs that configurations rank high.

    Each product is read from the index (title and short description). The judge reads the
    probabilities of the answer labels at the reply's first token: the score is the expected
    grade, the grade the likeliest label (or, with --calibration, the score mapped onto the
    human scale). Every row records the model, its version and the prompt's id. Evaluate with
    them: `esrank evaluate --machine-grades OUTPUT`; calibrate first: `esrank judgments
    calibrate`.
    """
    from esrank.evaluation.holes import judge_llm

    if (pairs is None) == (holes_of is None):
        raise click.UsageError("give PAIRS or --holes-of, not both")
    report = judge_llm(
        app_of(ctx), pairs or holes_of, output, holes_only=holes_of is not None,
        configs=configs or ("bm25", "active"), fmt=fmt, depth=depth,
        calibration=_calibration(calibration), limit=limit, progress=not as_json, **llm)
    emit(report.to_dict(), as_json, judging_text(report))


def _calibration(path: Path | None):
    """The calibration file at `path` (None without one), with a warning when its judge
    agreed too little with people to trust."""
    from esrank.judgments.llm_judge import Calibration

    cal = Calibration.load(path) if path else None
    if cal is not None and not cal.trusted:
        click.echo(f"warning: this judge agreed with people at weighted kappa "
                   f"{cal.weighted_kappa} on held-out queries (calibration {cal.id}); "
                   "treat its grades and '+machine' figures as a sketch", err=True)
    return cal


def judging_text(report) -> str:
    missing = report.not_in_index
    return (f"{report.graded} pairs graded by {report.model} ({report.prompt}) -> "
            f"{report.output}" + (f"; {len(missing)} doc(s) not in the index: "
                                  f"{', '.join(missing[:5])}" if missing else ""))


@judgments.command("calibrate")
@click.argument("grades", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("human", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=FORMATS, help="Format of HUMAN (default: extension).")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="The calibration (JSON) for `esrank judgments llm --calibration`.")
@click.option("--json", "as_json", is_flag=True)
def judgments_calibrate(grades: Path, human: Path, fmt: str | None, output: Path,
                        as_json: bool) -> None:
    """Fit an isotonic map from machine-grade scores (GRADES, from `esrank judgments llm`)
    to the human grades of the same pairs (HUMAN), and show the agreement before and after.

    The calibrated agreement is measured on held-out queries: two folds of queries, each
    mapped by a calibration fitted on the other. The file keeps its weighted kappa; `esrank
    judgments llm --calibration` warns when it is below 0.4.
    """
    from esrank.judgments.lists import read_judgments
    from esrank.judgments.llm_judge import calibrate, read_grades

    cal, report = calibrate(read_grades(grades), read_judgments(human, fmt))
    cal.save(output)
    report["output"] = str(output)
    keys = ("exact", "kappa", "weighted_kappa", "spearman")
    rows = [f"{len(cal.thresholds)} knots over {report['pairs']} pairs of "
            f"{report['queries']} queries -> {output}",
            f"{'':22}" + "".join(f"{k:>16}" for k in keys)]
    rows += [f"{name:22}" + "".join(f"{report[name][k]:>16.3f}" for k in keys)
             for name in ("raw", "calibrated_held_out")]
    emit(report, as_json, "\n".join(rows))


@judgments.command("from-clicks")
@click.argument("log", type=click.Path(path_type=Path), required=False)
# the names of esrank.judgments.clicks.CLICK_MODELS, spelt out: importing it here would cost
# every command a second of start-up
@click.option("--model", type=click.Choice(["coec", "sdbn"]), default="sdbn", show_default=True,
              help="Click model correcting for position bias.")
@click.option("--min-impressions", default=10, show_default=True,
              help="Drop (query, doc) pairs seen fewer times.")
@weights_option("What each UBI action counts; a doc counts its strongest action.")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="Where to write the judgments (format from the extension).")
@click.pass_context
def judgments_from_clicks(ctx: click.Context, log: Path | None, model: str,
                          min_impressions: int, weights: str, output: Path) -> None:
    """Grade (query, doc) pairs 0..3 from an OpenSearch UBI query/event log (ndjson; omitted:
    the engine's ubi_queries/ubi_events): clicks, carts and purchases, weighted, through a
    click model correcting for position."""
    from esrank.judgments.clicks import click_judgments, parse_weights

    derived = click_judgments(app_of(ctx).engine, log, output, model=model,
                                          weights=parse_weights(weights),
                                          min_impressions=min_impressions)
    click.echo(f"{len(derived)} judgments for {len(derived.queries())} queries -> {output}")


COMMANDS = (judgments,)
