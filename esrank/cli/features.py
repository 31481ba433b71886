"""esrank features validate/push/diff: feature-set files and the engine's stored versions."""

from __future__ import annotations

from pathlib import Path

import click

from esrank.cli.common import app_of, emit, settings_of


@click.group()
def features() -> None:
    """Feature sets as files (feature_sets/*.yaml): validate, push, diff."""


@features.command("validate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def features_validate(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Check feature-set files: schema, params, mustache and JSON of every template."""
    from esrank.features.parser import load_feature_sets

    sets = load_feature_sets(path or settings_of(ctx).feature_sets)
    data = [{"name": fs.name, "engine_name": fs.engine_name, "source": fs.source,
             "features": list(fs.feature_names)} for fs in sets]
    emit(data, as_json, "\n".join(f"ok  {d['source']}: {d['engine_name']} "
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
    from esrank.features.parser import load_feature_sets
    from esrank.features.sync import push_feature_sets

    app = app_of(ctx)
    results = push_feature_sets(app.engine, load_feature_sets(path or app.settings.feature_sets))
    emit(results, as_json, push_text(results))


def push_text(results: list[dict]) -> str:
    return "\n".join(f"{'created' if r['created'] else 'unchanged'}  {r['engine_name']}"
                     for r in results)


@features.command("diff")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def features_diff(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Show how local files differ from what the engine holds (exit 0 either way)."""
    from esrank.features.parser import load_feature_sets
    from esrank.features.sync import diff_against_engine

    app = app_of(ctx)
    results = [diff_against_engine(app.engine, fs)
               for fs in load_feature_sets(path or app.settings.feature_sets)]
    lines = []
    for r in results:
        lines.append(f"{r['engine_name']}: {r['status']}"
                     + (f" (compared with {r['compared_with']})" if r.get("compared_with") else ""))
        for kind in ("added", "removed", "changed"):
            lines += [f"  {kind:8} {name}" for name in r.get(kind, [])]
    emit(results, as_json, "\n".join(lines))


COMMANDS = (features,)
