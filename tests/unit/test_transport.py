"""The engine transports keep a connection per concurrent caller (HTTP answers come from a
local stand-in server that counts TCP connections; the real engines are exercised in
tests/engine)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from stand_in import reply_json, serving

from esrank.engine.elasticsearch import ElasticsearchTransport
from esrank.engine.opensearch import OpenSearchTransport

CALLERS = 8


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def process_request(self, request, client_address):
        self.connections += 1  # accept() runs on the one serving thread
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):  # noqa: N802 (http.server's naming)
        time.sleep(0.05)  # long enough for every caller to hold its own connection
        reply_json(self, 200, {"status": "green"}, {"X-Elastic-Product": "Elasticsearch"})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with serving(_Handler, _Counting) as httpd:
        yield httpd


@pytest.mark.parametrize("transport", [OpenSearchTransport, ElasticsearchTransport])
def test_concurrent_callers_reuse_their_connections(server, transport):
    t = transport(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            for _ in range(3):  # rounds of CALLERS requests at once, as the sidecar's threads
                answers = list(pool.map(
                    lambda _: t.request("health", "GET", "/_cluster/health"), range(CALLERS)))
                assert all(a == {"status": "green"} for a in answers)
    finally:
        t._client.close()
    # a pool smaller than the callers drops connections after each round and opens new ones
    assert server.connections <= CALLERS
