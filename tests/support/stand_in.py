"""A local stand-in HTTP server for unit tests that fake an HTTP answer, a listener that never
answers (the real engine and sidecar are exercised in tests/engine), and the sidecar's waitress
server run for a block."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer


def reply_json(handler: BaseHTTPRequestHandler, status: int, data, headers: dict | None = None
               ) -> None:
    """Answer the handler's request with `data` as JSON."""
    body = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler],
            server_class: type[HTTPServer] = ThreadingHTTPServer) -> Iterator[HTTPServer]:
    """`handler` on a free local port, in a thread, for the block."""
    server = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def black_hole(connects: bool = True) -> Iterator[str]:
    """The URL of a local listener that never answers, for the block. Connections open (the
    kernel completes them; nobody reads) and each request waits for its answer; with
    `connects` False the listener's backlog is full, and connecting itself waits."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128 if connects else 0)
    port = listener.getsockname()[1]
    # a backlog of 0 holds one connection: this one fills it, later connects are dropped
    filler = None if connects else socket.create_connection(("127.0.0.1", port))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if filler is not None:
            filler.close()
        listener.close()


@contextmanager
def running(server) -> Iterator[int]:
    """A waitress `server` (esrank.serve.server.make_server) serving in a thread for the block:
    its port. It stops as waitress can: the request threads first, then the loop closes its
    own sockets (closed from another thread, a socket the loop is polling fails it)."""
    from waitress import wasyncore

    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield server.effective_port
    finally:
        server.task_dispatcher.shutdown()
        # waitress has no public stop: the loop itself closes every socket in its map (the
        # server's own, unnamed), then ends
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        loop.join(10)
        assert not loop.is_alive(), "the server's loop did not stop"
