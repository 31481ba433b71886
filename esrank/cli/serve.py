"""esrank serve and esrank llm serve: the sidecar, and the local LLM as an OpenAI-compatible
API."""

from __future__ import annotations

import click

from esrank.cli.common import settings_of


@click.command("serve")
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
    from esrank.serve.server import make_server, run_until_stopped

    s = settings_of(ctx)
    host, port = host or s.serve.host, port or s.serve.port
    if s.serve.auth_token is None and not _loopback(host):
        raise click.UsageError(f"--host {host} opens the sidecar to the network: set a token "
                               "first (ESRANK_SERVE__TOKEN); see docs/sidecar.md")
    app = create_app(s)
    click.echo(f"esrank sidecar on http://{host}:{port} (encoder "
               f"{app.extensions['esrank'].encoder.name})")
    server = make_server(app, host, port, threads or s.serve.threads)
    if not run_until_stopped(server, app):
        click.echo("stopped before every UBI record and profile change was stored "
                   "(ESRANK_SERVE__DRAIN_TIMEOUT)", err=True)


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.group()
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
    lm = load_llm(model or settings_of(ctx).llm.model)
    click.echo(f"{lm.name} on http://{host}:{port}/v1", err=True)
    serve(create_llm_app(lm), host=host, port=port, threads=1)


COMMANDS = (serve_cmd, llm)
