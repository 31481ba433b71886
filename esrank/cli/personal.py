"""esrank profiles/experiment/signals/ubi-load: shoppers' behaviour (UBI) turned into profiles,
experiment results and product signals."""

from __future__ import annotations

from pathlib import Path

import click

from esrank.cli.common import app_of, emit, weights_option


@click.group()
def profiles() -> None:
    """Shopper profiles from behaviour (UBI events): brand affinity and price band, kept in
    the engine (ESRANK_PROFILES_INDEX) for personal features."""


@profiles.command("build")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="A UBI ndjson file (default: the engine's ubi_queries/ubi_events indices).")
@weights_option("What each action counts toward a profile.")
@click.option("--half-life-days", default=30.0, show_default=True,
              help="An action's weight halves every this many days.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def profiles_build(ctx: click.Context, log_path: Path | None, weights: str,
                   half_life_days: float, as_json: bool) -> None:
    """Build every shopper's profile from their actions and store it (replacing theirs)."""
    from esrank.judgments.clicks import parse_weights
    from esrank.personal.shopper import rebuild_profiles

    data = rebuild_profiles(app_of(ctx), log_path, weights=parse_weights(weights),
                                      half_life_days=half_life_days)
    emit(data, as_json, f"{data['profiles']} profiles from {data['events']} events "
                        f"({data['products']} products; {data['unknown_products']} not in "
                        f"the index) -> {data['index']}")


@profiles.command("show")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def profiles_show(ctx: click.Context, user_id: str, as_json: bool) -> None:
    """One shopper's stored profile and the shopper params it gives."""
    from esrank.personal.serving import params_for
    from esrank.personal.shopper import ShopperContext

    app = app_of(ctx)
    profile = app.profile(user_id)
    if profile is None:
        raise click.ClickException(f"no profile for {user_id!r} in "
                                   f"{app.settings.profiles_index} (esrank profiles build)")
    data = {**profile.to_dict(), "params": params_for(app, ShopperContext(user_id))}
    brands = ", ".join(f"{b} {w:.2f}" for b, w in profile.brands) or "none"
    band = (f"{profile.price:.2f} +- {profile.price_scale:.2f} EUR" if profile.price
            else "unknown")
    emit(data, as_json, f"{user_id}: {profile.actions} actions; brands {brands}; price {band}")


@click.group()
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
    from esrank.personal.experiment import experiment_report as report_of

    if name and not (control and treatment):
        raise click.UsageError("--name needs --control and --treatment")
    chosen = Experiment(name, control, treatment, mode) if name else None
    result = report_of(app_of(ctx), chosen, log_path)
    emit(result.to_dict(), as_json, _experiment_text(result))


def _experiment_text(result) -> str:
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
    return "\n".join(lines)


@click.command("signals")
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
    from esrank.personal.signals import update_signals

    data = update_signals(app_of(ctx), log_path, prior=prior)
    emit(data, as_json, f"signals of {data['products']} products from {data['sessions']} "
                        f"sessions -> {data['index']} ({data['updated']} updated, "
                        f"{data['not_in_index']} not in the index)")


@click.command("ubi-load")
@click.argument("log", type=click.Path(path_type=Path))
@click.pass_context
def ubi_load(ctx: click.Context, log: Path) -> None:
    """Store a UBI ndjson file (queries and events) in the engine's UBI indices."""
    from esrank.ubi.indices import store_file

    count = store_file(app_of(ctx).engine, log)
    click.echo(f"{count} UBI records -> ubi_queries, ubi_events")


COMMANDS = (profiles, experiment, signals_cmd, ubi_load)
