"""The waitress server the sidecar runs under (`esrank serve`, bench/sidecar.py, the tests).

waitress answers some requests itself, before the app sees them: a body over its limit (it
refuses a Content-Length over it unread, and stops reading a chunked body there), a malformed
request. Those answers take the API's JSON shape, {"error": ...}, as the app's own errors do.
"""

from __future__ import annotations

import json

from flask import Flask
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from esrank.serve import NOSNIFF, too_large


class _JsonErrorTask(ErrorTask):
    """waitress's own refusal as JSON (waitress writes plain text)."""

    def execute(self):
        error = self.request.error
        # the app's limit: make_server sets waitress's one byte above it
        message = (too_large(self.channel.adj.max_request_body_size - 1) if error.code == 413
                   else f"{error.reason}: {error.body}")
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers += [("Content-Type", "application/json"), NOSNIFF]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


def make_server(app: Flask, host: str, port: int, threads: int):
    """A waitress server for the sidecar `app` (`.run()` serves); the body limit is the app's
    (ESRANK_SERVE__MAX_BODY_BYTES), and waitress refuses a larger body with the app's 413.

    >>> make_server(create_app(), "127.0.0.1", 8080, threads=32).run()  # doctest: +SKIP
    """
    # waitress refuses a body of its limit or more, Flask one over its own: one byte above
    # Flask's, both refuse the same bodies
    server = create_server(app, host=host, port=port, threads=threads, ident="esrank",
                           max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1)
    server.channel_class = _JsonErrorChannel  # the class waitress makes each connection of
    return server


def run_until_stopped(server, app: Flask) -> bool:
    """Serve until SIGTERM or Ctrl-C, then let the requests under way finish (waitress) and
    store what the sidecar still holds (UBI records, profile changes), waiting at most
    ESRANK_SERVE__DRAIN_TIMEOUT; True when nothing was lost. A SIGKILL loses what was queued
    (at most the writers' last 0.5 s; docs/sidecar.md)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # waitress stops on SystemExit
    server.run()
    sidecar = app.extensions["esrank"]
    return sidecar.close(sidecar.cfg.drain_timeout)


def search_once(settings, query: str, size: int = 3) -> dict:
    """Start the sidecar of `settings` on a free loopback port, answer one POST /search for
    `query`, stop it; returns the answer (the demo's proof that the sidecar ranks).

    >>> search_once(load_settings(), "bluetooth speaker")["ranker"]     # doctest: +SKIP
    'chorus-v3'
    """
    import socket
    import threading
    import urllib.request

    from esrank.serve import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = make_server(create_app(settings), "127.0.0.1", port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/search", data=json.dumps({"query": query, "size": size})
            .encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    finally:
        server.close()
