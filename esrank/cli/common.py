"""What the command modules share: the app and settings of a run, --json output, and the
options and parameter types several commands take."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import click

from esrank.app import App
from esrank.core.settings import Settings

FLAVOR = click.Choice(["opensearch", "elasticsearch"])
FORMATS = click.Choice(["csv", "ranklib", "trec", "srw"])


def emit(data, as_json: bool, text: str) -> None:
    """Print `data` as strict JSON with --json, else `text`."""
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


def settings_of(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def app_of(ctx: click.Context) -> App:
    return ctx.obj["app"]


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


def options(*decorators):
    """One decorator applying `decorators` in the order written (the first is outermost)."""

    def apply(f):
        for option in reversed(decorators):
            f = option(f)
        return f

    return apply


def weights_option(help_text: str):
    """--weights ACTION=W,... (esrank.judgments.clicks.ACTION_WEIGHTS by default;
    clicks.parse_weights reads it)."""
    return click.option("--weights", default="click=1,add_to_cart=2,purchase=4",
                        show_default=True, metavar="ACTION=W,...", help=help_text)


def shopper_options(f):
    """--user/--brand/--price-band, handed to the command as one `shopper` ShopperContext."""

    @functools.wraps(f)
    def wrapper(*args, user_id=None, brands=(), price_band=None, **kwargs):
        from esrank.personal.shopper import ShopperContext

        return f(*args, shopper=ShopperContext(user_id, None, tuple(brands), price_band),
                 **kwargs)

    return options(
        click.option("--user", "user_id", help="The shopper: their stored profile "
                                               "personalises the ranking (esrank profiles "
                                               "build)."),
        click.option("--brand", "brands", multiple=True,
                     help="A brand the shopper is looking at now (repeatable)."),
        click.option("--price-band", nargs=2, type=float, metavar="LOW HIGH",
                     help="The shopper's price band in euros."))(wrapper)
