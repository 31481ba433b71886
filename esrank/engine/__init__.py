"""Connect to a cluster: pick the transport for its flavour, wrap it in the one LTR seam."""

from __future__ import annotations

from esrank.engine.auth import Auth
from esrank.engine.base import Engine, Transport
from esrank.errors import ConfigError


def connect(url: str, *, flavor: str = "auto", auth: Auth | None = None,
            timeout: float = 30.0, store: str | None = None) -> Engine:
    """An Engine for `url`; flavor "auto" asks the cluster what it is (GET /)."""
    transport: Transport
    if flavor in ("auto", "opensearch"):
        from esrank.engine.opensearch import OpenSearchTransport

        transport = OpenSearchTransport(url, auth, timeout)
        if flavor == "auto":
            info = transport.request("detect engine", "GET", "/", target=url)
            if info.get("version", {}).get("distribution") != "opensearch":
                flavor = "elasticsearch"
    if flavor == "elasticsearch":
        from esrank.engine.elasticsearch import ElasticsearchTransport

        transport = ElasticsearchTransport(url, auth, timeout)
    elif flavor not in ("auto", "opensearch"):
        raise ConfigError(f"unknown engine flavor {flavor!r} (auto, opensearch, elasticsearch)")
    return Engine(transport, store=store)


__all__ = ["Auth", "Engine", "connect"]
