"""OpenSearch transport (opensearch-py)."""

from __future__ import annotations

from typing import Any

from esrank.engine.auth import Auth, redact, scrub
from esrank.engine.base import CONNECTIONS_PER_NODE, reason_of
from esrank.errors import EngineError


class OpenSearchTransport:
    flavor = "opensearch"

    def __init__(self, url: str, auth: Auth | None = None, timeout: float = 30.0):
        from opensearchpy import OpenSearch

        auth = auth or Auth()
        headers = {"Authorization": f"ApiKey {auth.api_key}"} if auth.api_key else None
        self.url = redact(url)  # what messages show; the client gets the credentials
        self._raw_url = url
        self._client = OpenSearch(
            hosts=[url], http_auth=auth.basic, headers=headers, verify_certs=auth.verify_certs,
            ca_certs=auth.ca_certs, timeout=timeout, max_retries=0,
            pool_maxsize=CONNECTIONS_PER_NODE)

    def request(self, operation: str, method: str, path: str, *, body: Any = None,
                params: dict | None = None, target: str | None = None) -> Any:
        from opensearchpy import exceptions as exc

        try:
            return self._client.transport.perform_request(method, path, params=params,
                                                          body=body)
        except exc.ConnectionError as err:
            raise EngineError(operation, scrub(f"cannot reach {self.url} ({err.error}); is the "
                                               "engine up? (esrank engine up)", self._raw_url),
                              target=target) from err
        except exc.TransportError as err:
            status = err.status_code if isinstance(err.status_code, int) else None
            raise EngineError(operation, scrub(reason_of(err.info, err.error), self._raw_url),
                              target=target, status=status) from err
