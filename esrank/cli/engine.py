"""esrank engine up/down/status: the local OpenSearch and Elasticsearch nodes."""

from __future__ import annotations

import click

from esrank.cli.common import FLAVOR, app_of, emit


@click.group()
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

    info = up(app_of(ctx).local_engine(flavor), progress=not as_json)
    emit(info, as_json, up_text(info))


def up_text(info: dict) -> str:
    verb = (f"started in {info['start_seconds']}s" if info["started"] else "already running")
    plugin = info.get("ltr_plugin") or {}
    return (f"{info['flavor']} {info['version']} {verb} at {info['url']} (pid "
            f"{info['pid']}, health {info.get('health')}, plugins: "
            f"{', '.join(info.get('plugins', []))})\nLTR plugin from {plugin.get('source')}: "
            f"{plugin.get('location')} ({plugin.get('verified')})")


@engine.command("down")
@_ENGINE_FLAVOR
@click.pass_context
def engine_down(ctx: click.Context, flavor: str | None) -> None:
    """Stop the node that `esrank engine up` started (by its pid file)."""
    from esrank.engine.local import down

    node = app_of(ctx).local_engine(flavor)
    click.echo(f"{node.flavor} stopped" if down(node) else f"{node.flavor} was not running")


@engine.command("status")
@click.option("--flavor", type=FLAVOR, help="Only this node (default: both).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def engine_status(ctx: click.Context, flavor: str | None, as_json: bool) -> None:
    """Show whether each local node runs, its health, version, plugins and LTR plugin source."""
    from esrank.engine.local import status

    infos = [status(app_of(ctx).local_engine(f))
             for f in ([flavor] if flavor else FLAVOR.choices)]
    text = "\n\n".join("\n".join(f"{k:12} {v}" for k, v in info.items()) for info in infos)
    emit(infos, as_json, text)


COMMANDS = (engine,)
