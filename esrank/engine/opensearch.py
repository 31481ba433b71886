"""OpenSearch transport (opensearch-py)."""

from __future__ import annotations

from typing import Any

from esrank.core.auth import Auth, redact, split_hosts
from esrank.core.errors import EngineError, EngineTimeoutError
from esrank.engine.cluster import CONNECTIONS_PER_NODE, failover, reason_of


class OpenSearchTransport:
    flavor = "opensearch"

    def __init__(self, url: str, auth: Auth | None = None, timeout: float = 30.0):
        from opensearchpy import OpenSearch

        self.url = redact(url)  # what messages show
        # the client gets the credentials as auth, never in a URL it could log or echo
        urls, auth = split_hosts(url, auth)
        headers = {"Authorization": f"ApiKey {auth.api_key}"} if auth.api_key else None
        self._timeout = timeout
        self._client = OpenSearch(
            hosts=urls, http_auth=auth.basic, headers=headers, verify_certs=auth.verify_certs,
            ca_certs=auth.ca_certs, timeout=timeout, max_retries=failover(urls),
            retry_on_status=(), retry_on_timeout=False, pool_maxsize=CONNECTIONS_PER_NODE)

    def request(self, operation: str, method: str, path: str, *, body: Any = None,
                params: dict | None = None, target: str | None = None) -> Any:
        from opensearchpy import exceptions as exc
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

        try:
            return self._client.transport.perform_request(method, path, params=params,
                                                          body=body)
        except exc.ConnectionError as err:
            # a read timeout is a ConnectionTimeout; a connect timeout only shows in the cause
            # (whose subclass NewConnectionError is a refusal)
            if isinstance(err, exc.ConnectionTimeout) or (
                    isinstance(err.info, ConnectTimeoutError)
                    and not isinstance(err.info, NewConnectionError)):
                raise EngineTimeoutError(operation, self.url, self._timeout,
                                         target=target) from err
            raise EngineError(operation, f"cannot reach {self.url} ({err.error}); is the engine "
                              "up? (esrank engine up)", target=target) from err
        except exc.TransportError as err:
            status = err.status_code if isinstance(err.status_code, int) else None
            raise EngineError(operation, reason_of(err.info, err.error), target=target,
                              status=status) from err
        except exc.SerializationError as err:  # a body it cannot send, an answer it cannot read
            raise EngineError(operation, f"{type(err).__name__} talking to {self.url}: {err}",
                              target=target) from err
