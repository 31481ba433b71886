"""Connect to a cluster: pick the transport for its flavour, wrap it in the one LTR seam."""

from __future__ import annotations

from esrank.core.auth import Auth, redact
from esrank.core.errors import ConfigError, EngineError
from esrank.engine.base import Engine, Ranked, Rescore
from esrank.engine.cluster import Transport

FLAVORS = ("opensearch", "elasticsearch")


def connect(url: str, *, flavor: str = "auto", auth: Auth | None = None,
            timeout: float = 30.0, store: str | None = None) -> Engine:
    """An Engine for `url`; flavor "auto" asks the cluster what it is (GET /)."""
    if flavor == "auto":
        flavor = detect(url, auth, timeout)
    if flavor not in FLAVORS:
        raise ConfigError(f"unknown engine flavor {flavor!r} (auto, {', '.join(FLAVORS)})")
    return Engine(_transport(flavor, url, auth, timeout), store=store)


def detect(url: str, auth: Auth | None = None, timeout: float = 30.0) -> str:
    """"opensearch" when GET / says so, else "elasticsearch". An Elasticsearch node without
    the rest-root module (the integ-test distribution) answers GET / with 405; OpenSearch
    always serves it."""
    try:
        info = _transport("opensearch", url, auth, timeout).request(
            "detect engine", "GET", "/", target=redact(url))
    except EngineError as exc:
        if exc.status == 405:
            return "elasticsearch"
        raise
    return "opensearch" if info.get("version", {}).get("distribution") == "opensearch" \
        else "elasticsearch"


def _transport(flavor: str, url: str, auth: Auth | None, timeout: float) -> Transport:
    if flavor == "opensearch":
        from esrank.engine.opensearch import OpenSearchTransport

        return OpenSearchTransport(url, auth, timeout)
    from esrank.engine.elasticsearch import ElasticsearchTransport

    return ElasticsearchTransport(url, auth, timeout)


__all__ = [
    "Auth", "Engine", "FLAVORS", "Ranked", "Rescore", "connect", "detect",
]
