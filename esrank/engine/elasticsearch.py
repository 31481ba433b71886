"""Elasticsearch transport (elasticsearch-py 8.x).

The client is pinned below 9: elasticsearch-py 9 asks for `compatible-with=9` on every request,
which an 8.x node refuses; 8.x asks for `compatible-with=8`, which 8.x and 9.x nodes accept.
elasticsearch-py refuses to talk to OpenSearch (its product check), so OpenSearch always goes
through the OpenSearch transport.
"""

from __future__ import annotations

from typing import Any

from esrank.core.auth import Auth, redact, split_hosts
from esrank.core.errors import EngineError, EngineTimeoutError
from esrank.engine.cluster import CONNECTIONS_PER_NODE, failover, reason_of


class ElasticsearchTransport:
    flavor = "elasticsearch"

    def __init__(self, url: str, auth: Auth | None = None, timeout: float = 30.0):
        from elasticsearch import Elasticsearch

        self.url = redact(url)  # what messages show
        # the client gets the credentials as auth, never in a URL it could log or echo
        urls, auth = split_hosts(url, auth)
        self._timeout = timeout
        self._client = Elasticsearch(
            urls, basic_auth=auth.basic, api_key=auth.api_key, verify_certs=auth.verify_certs,
            ca_certs=auth.ca_certs, request_timeout=timeout, max_retries=failover(urls),
            retry_on_status=(), retry_on_timeout=False,
            connections_per_node=CONNECTIONS_PER_NODE)

    def request(self, operation: str, method: str, path: str, *, body: Any = None,
                params: dict | None = None, target: str | None = None) -> Any:
        from elasticsearch import ApiError, ConnectionTimeout, TransportError
        from elasticsearch import ConnectionError as EsConnectionError

        ndjson = isinstance(body, str)
        kind = "application/x-ndjson" if ndjson else "application/json"
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = kind
        try:
            response = self._client.perform_request(method, path, params=params,
                                                    headers=headers, body=body)
        except ConnectionTimeout as err:
            raise EngineTimeoutError(operation, self.url, self._timeout, target=target) from err
        except EsConnectionError as err:  # refused, reset, TLS
            raise EngineError(operation, f"cannot reach {self.url} ({err}); is the engine up? "
                              "(esrank engine up --flavor elasticsearch)", target=target) from err
        except ApiError as err:
            raise EngineError(operation, reason_of(err.body, err.message), target=target,
                              status=err.meta.status) from err
        except TransportError as err:  # a body it cannot send, an answer it cannot read
            raise EngineError(operation, f"{type(err).__name__} talking to {self.url}: {err}",
                              target=target) from err
        return response.body
