"""esrank engine up/down/status: the local OpenSearch and Elasticsearch nodes."""

from __future__ import annotations

import click

from esrank.cli.common import FLAVOR, app_of, emit


@click.group()
def engine() -> None:
    """Manage the local clusters: OpenSearch 3.6 + LTR + k-NN (127.0.0.1:9200) and
    Elasticsearch 8.18 + the o19s LTR plugin (127.0.0.1:9201); both can run at once.

    Each is one node unless --nodes (or ESRANK_ENGINE__<FLAVOR>__NODES) says more: node i
    answers on the port + 10 i. Another --port runs a second cluster of the same flavor beside
    the first (its transport port is the port + 100)."""


def _cluster_options(command):
    """--flavor, --nodes and --port: which local cluster."""
    command = click.option("--port", type=click.IntRange(1, 65535),
                           help="Its first node's HTTP port (default: the settings').")(command)
    command = click.option("--nodes", type=click.IntRange(1, 9),
                           help="How many nodes it has (default: ESRANK_ENGINE__<FLAVOR>__"
                                "NODES, else 1).")(command)
    return click.option("--flavor", type=FLAVOR,
                        help="Which engine (default: ESRANK_FLAVOR, else opensearch).")(command)


@engine.command("up")
@_cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def engine_up(ctx: click.Context, flavor: str | None, nodes: int | None, port: int | None,
              as_json: bool) -> None:
    """Download (cached), install and start the nodes that are not running; waits until all
    have joined and the cluster is green. Idempotent: after a node died, `up` restarts it.

    The LTR plugin comes from ESRANK_ENGINE__<FLAVOR>__LTR_PLUGIN (a zip path, or a URL with
    ..._SHA256) when set, else from the plugin's official release; the output says which and
    how it was verified.
    """
    from esrank.engine.local import up

    info = up(app_of(ctx).local_engine(flavor, nodes=nodes, port=port), progress=not as_json)
    emit(info, as_json, up_text(info))


def up_text(info: dict) -> str:
    verb = (f"started in {info['start_seconds']}s" if info["started"] else "already running")
    plugin = info.get("ltr_plugin") or {}
    where = (f"with {len(info['nodes'])} nodes at {', '.join(n['url'] for n in info['nodes'])} ("
             if "nodes" in info else f"at {info['url']} (pid {info['pid']}, ")
    return (f"{info['flavor']} {info['version']} {verb} {where}health "
            f"{info.get('health')}, plugins: {', '.join(info.get('plugins', []))})\n"
            f"LTR plugin from {plugin.get('source')}: {plugin.get('location')} "
            f"({plugin.get('verified')})")


@engine.command("down")
@_cluster_options
@click.option("--node", "number", type=int, help="Stop this node alone (0 is the first).")
@click.pass_context
def engine_down(ctx: click.Context, flavor: str | None, nodes: int | None, port: int | None,
                number: int | None) -> None:
    """Stop the cluster's nodes that `esrank engine up` started (by their pid files), or one
    node (`up` starts it again)."""
    from esrank.engine.local import down, stop_node

    cluster = app_of(ctx).local_engine(flavor, nodes=nodes, port=port)
    what = cluster.flavor if number is None else f"{cluster.flavor} node {number}"
    stopped = down(cluster) if number is None else stop_node(cluster.node(number))
    click.echo(f"{what} stopped" if stopped else f"{what} was not running")


@engine.command("status")
@_cluster_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def engine_status(ctx: click.Context, flavor: str | None, nodes: int | None,
                  port: int | None, as_json: bool) -> None:
    """Show whether each local cluster (or only --flavor's) runs: its nodes, health, version,
    plugins and LTR plugin source."""
    from esrank.engine.local import status

    app = app_of(ctx)
    infos = [status(app.local_engine(f, nodes=nodes, port=port))
             for f in ([flavor] if flavor else FLAVOR.choices)]
    text = "\n\n".join("\n".join(f"{k:12} {v}" for k, v in info.items()) for info in infos)
    emit(infos, as_json, text)


COMMANDS = (engine,)
