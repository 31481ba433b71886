"""The engine transports keep a connection per concurrent caller, and turn every way a request
can fail into an EngineError: a timeout (EngineTimeoutError), a refusal, an unreadable answer.
HTTP answers come from local stand-ins; the real engines are exercised in tests/engine."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from stand_in import black_hole, reply_json, serving

from esrank.engine.elasticsearch import ElasticsearchTransport
from esrank.engine.opensearch import OpenSearchTransport
from esrank.errors import EngineError, EngineTimeoutError

CALLERS = 8
TRANSPORTS = [OpenSearchTransport, ElasticsearchTransport]


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


@pytest.mark.parametrize("transport", TRANSPORTS)
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


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("connects", [True, False], ids=["no-answer", "no-connection"])
def test_an_engine_that_does_not_answer_in_time_is_a_timeout(transport, connects):
    with black_hole(connects) as url:
        t = transport(url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(EngineTimeoutError, match=rf"health failed: no answer from {url} "
                                                     r"within 0.5 s \(timed out\)"):
            t.request("health", "GET", "/_cluster/health")
        assert time.monotonic() - started < 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_connection_is_no_timeout(transport):
    with pytest.raises(EngineError, match="cannot reach http://127.0.0.1:9 ") as caught:
        transport("http://127.0.0.1:9", timeout=0.5).request("health", "GET", "/")
    assert not isinstance(caught.value, EngineTimeoutError)


class _Unreadable(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b"<html>a proxy's error page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unreadable_answer_is_an_engine_error(transport):
    with serving(_Unreadable) as httpd:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with pytest.raises(EngineError, match=f"SerializationError talking to {url}"):
            transport(url, timeout=2).request("health", "GET", "/")
