"""The sidecar under a real waitress server, as `esrank serve` runs it: what waitress answers
itself (a body over the limit, a malformed request) has the API's JSON error shape."""

from __future__ import annotations

import http.client
import json

import pytest
from support.stand_in import running

from esrank.serve.server import make_server

LIMIT = 1000  # ESRANK_SERVE__MAX_BODY_BYTES in these tests


@pytest.fixture()
def port(make_app):
    with running(make_server(make_app(serve={"max_body_bytes": LIMIT}), "127.0.0.1", 0,
                             threads=2)) as port:
        yield port


def _embed(size: int) -> bytes:
    """An /embed body of exactly `size` bytes."""
    head, tail = b'{"texts": ["', b'"]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def _send(port: int, headers: dict, body=None, chunked: bool = False):
    """POST `body` (pieces: chunks when `chunked`) in one write, so that waitress reads all of
    it before it answers: a server that closes with bytes unread resets the connection, and
    the client may lose the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/embed")
        for name, value in {"Content-Type": "application/json", **headers}.items():
            conn.putheader(name, value)
        conn.endheaders()
        pieces = list(body or ())
        if chunked:
            pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
        if pieces:
            conn.send(b"".join(pieces))
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _error(response, data) -> str:
    assert response.getheader("Content-Type") == "application/json", data
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    return json.loads(data)["error"]


def test_a_declared_length_over_the_limit_is_a_json_413_before_the_body_is_sent(port):
    response, data = _send(port, {"Content-Length": str(LIMIT + 1)})  # no body follows
    assert response.status == 413
    assert _error(response, data) == ("the request body is over the limit of 1,000 bytes "
                                      "(ESRANK_SERVE__MAX_BODY_BYTES)")


def test_a_chunked_body_over_the_limit_is_a_json_413(port):
    body = _embed(LIMIT + 200)
    response, data = _send(port, {"Transfer-Encoding": "chunked"},
                           [body[i:i + 100] for i in range(0, len(body), 100)], chunked=True)
    assert response.status == 413 and "1,000 bytes" in _error(response, data)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_within_the_limit_is_served(port, chunked):
    # a declared length may be the limit itself; a chunked body's framing counts too
    body = _embed(LIMIT - 100 if chunked else LIMIT)
    headers = ({"Transfer-Encoding": "chunked"} if chunked
               else {"Content-Length": str(len(body))})
    response, data = _send(port, headers, [body[:500], body[500:]] if chunked else [body],
                           chunked=chunked)
    assert response.status == 200, data
    assert len(json.loads(data)["vectors"]) == 1


def test_a_request_waitress_cannot_parse_is_a_json_400(port):
    response, data = _send(port, {"Content-Length": "ten"})
    assert response.status == 400 and "Content-Length is invalid" in _error(response, data)
