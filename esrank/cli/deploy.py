"""esrank upload/models: a trained model into the LTR plugin behind the parity gate, and the
registry of deployed models."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from esrank.cli.common import app_of, emit


@click.command("upload")
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
    from esrank.deploy.upload import upload

    fs, report = upload(app_of(ctx), artifact, feature_set_path, table,
                                    parity_queries=parity_queries, tolerance=tolerance,
                                    activate=activate)
    emit(report.to_dict(), as_json, deploy_text(report, fs.name))
    if not report.parity.passed:
        sys.exit(1)


def deploy_text(report, set_name: str) -> str:
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


@click.group()
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
    from esrank.deploy.registry import listing

    app = app_of(ctx)
    doc, stray = listing(app.engine, set_name or app.settings.active_set)
    lines = [f"{doc.feature_set}: active {doc.active or 'none'}"]
    for name, rec in sorted(doc.models.items(), key=lambda kv: kv[1].uploaded_at):
        lines.append(f"{'*' if name == doc.active else ' '} {name:16} {rec.feature_set:22} "
                     f"{rec.cv_text}  parity max|d| {rec.parity_max_delta:.2g}  "
                     f"{rec.uploaded_at}  {rec.note or ''}".rstrip())
    lines += [f"  {name:16} in the plugin, not registered (a deploy that failed): esrank "
              f"models delete {name} --yes" for name in stray]
    emit({**doc.to_dict(), "unregistered": stray}, as_json, "\n".join(lines))


@models.command("activate")
@click.argument("name")
@_SET
@click.pass_context
def models_activate(ctx: click.Context, name: str, set_name: str | None) -> None:
    """Make a deployed model the one search uses."""
    from esrank.deploy.registry import activate

    app = app_of(ctx)
    previous = activate(app.engine, set_name or app.settings.active_set, name)
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

    app = app_of(ctx)
    current, target = rollback(app.engine, set_name or app.settings.active_set, to)
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
    app = app_of(ctx)
    delete(app.engine, set_name or app.settings.active_set, name)
    click.echo(f"deleted {name}")


COMMANDS = (upload_cmd, models)
