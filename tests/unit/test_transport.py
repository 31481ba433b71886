"""The engine transports keep a connection per concurrent caller, turn every way a request can
fail into an EngineError (a timeout: EngineTimeoutError, a refusal, an unreadable answer), and
take credentials out of the URL in every form, sending them as basic auth. HTTP answers come
from local stand-ins; the real engines are exercised in tests/engine."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.stand_in import black_hole, reply_json, serving

from esrank.core.auth import Auth, redact, split_credentials
from esrank.core.errors import ConfigError, EngineError, EngineTimeoutError
from esrank.engine.elasticsearch import ElasticsearchTransport
from esrank.engine.opensearch import OpenSearchTransport

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


@pytest.mark.parametrize("url, shown", [
    ("https://elastic:hunter2@host:9200", "https://elastic:***@host:9200"),
    ("https://hunter2@host", "https://***@host"),  # a username alone: often a token
    ("elastic:hunter2@host:9200", "elastic:***@host:9200"),  # no scheme
    ("hunter2@host:9200/x", "***@host:9200/x"),
    ("http://elastic:hun/ter2@host", "http://elastic:***@host"),  # a raw "/": malformed
    ("http://elastic:hun@ter2@host", "http://elastic:***@host"),
    ("https://host:9200/prefix", "https://host:9200/prefix"),
])
def test_redact_hides_credentials_in_every_form(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("url, clean, basic", [
    ("https://elastic:hunter2@host:9200/x", "https://host:9200/x", ("elastic", "hunter2")),
    ("https://hunter2@host", "https://host", ("hunter2", "")),  # as curl reads it
    ("http://el%40stic:p%3Ass@host", "http://host", ("el@stic", "p:ss")),
    ("http://host:9200", "http://host:9200", None),
])
def test_credentials_leave_the_url_for_basic_auth(url, clean, basic):
    url, auth = split_credentials(url, Auth(ca_certs="ca.pem"))
    assert (url, auth.basic, auth.ca_certs) == (clean, basic, "ca.pem")


@pytest.mark.parametrize("url, problem", [
    ("elastic:hunter2@host:9200", "needs http:// or https://"),
    ("ftp://hunter2@host", "needs http:// or https://"),
    ("http://localhost:abc", "no valid host and port"),
    ("http://localhost:0", "no valid host and port"),
    ("http://localhost:65536", "no valid host and port"),
    ("http://elastic:hun/ter2@host", "no valid host and port"),
    ("http://:hunter2@host", "a password but no username"),
])
def test_an_unusable_url_is_a_config_error_without_its_secret(url, problem):
    with pytest.raises(ConfigError, match=problem) as err:
        split_credentials(url)
    assert f"the URL {redact(url)} " in str(err.value)
    assert "hunter2" not in str(err.value) and "ter2" not in str(err.value)


def test_credentials_given_twice_are_refused():
    with pytest.raises(ConfigError, match="carries credentials, and a username, password or "
                                          "API key is set as well") as err:
        split_credentials("https://elastic:hunter2@host", Auth(api_key="k"))
    assert "hunter2" not in str(err.value)


class _Recording(BaseHTTPRequestHandler):
    """Answers every GET, keeping the Authorization header it came with."""

    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.seen.append(self.headers.get("Authorization"))
        reply_json(self, 200, {"status": "green"}, {"X-Elastic-Product": "Elasticsearch"})

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("userinfo, basic", [("elastic:hunter2", "elastic:hunter2"),
                                             ("hunter2", "hunter2:")])
def test_both_transports_send_url_credentials_as_basic_auth(transport, userinfo, basic):
    _Recording.seen = []
    with serving(_Recording) as httpd:
        t = transport(f"http://{userinfo}@127.0.0.1:{httpd.server_address[1]}", timeout=2)
        assert t.request("health", "GET", "/_cluster/health") == {"status": "green"}
    assert _Recording.seen == [f"Basic {base64.b64encode(basic.encode()).decode()}"]
    assert "hunter2" not in t.url


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("userinfo, shown", [("elastic:hunter2", "elastic:***"),
                                             ("hunter2", "***")])
def test_url_credentials_never_reach_an_error(transport, userinfo, shown):
    with pytest.raises(EngineError) as err:
        transport(f"http://{userinfo}@127.0.0.1:9", timeout=2).request("health", "GET", "/")
    assert f"cannot reach http://{shown}@127.0.0.1:9 " in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_node_that_refuses_hands_the_request_to_the_next(server, transport):
    """A cluster given by several URLs: a request the first node refuses (it is down) goes to
    the next, every time."""
    up = f"http://127.0.0.1:{server.server_address[1]}"
    t = transport(f"http://127.0.0.1:9,{up}")
    try:
        for _ in range(4):
            assert t.request("health", "GET", "/_cluster/health") == {"status": "green"}
    finally:
        t._client.close()
    with pytest.raises(EngineError, match="cannot reach http://127.0.0.1:9,http://127.0.0.1:8 "):
        transport("http://127.0.0.1:9,http://127.0.0.1:8").request("health", "GET", "/")


def test_several_urls_must_carry_the_same_credentials():
    from esrank.core.auth import split_hosts

    assert split_hosts("https://u:p@a:9200, https://u:p@b:9200") == (
        ["https://a:9200", "https://b:9200"], Auth(username="u", password="p"))
    with pytest.raises(ConfigError, match="different credentials") as caught:
        split_hosts("https://u:p@a:9200,https://u:q@b:9200")
    assert "p@" not in str(caught.value) and "q@" not in str(caught.value)
