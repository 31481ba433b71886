"""Kibana / OpenSearch Dashboards: the saved-objects import, the one request esrank sends to
them (the engine seam's only non-engine HTTP)."""

from __future__ import annotations

import json

from esrank.core.auth import Auth, split_credentials
from esrank.core.errors import EngineError

XSRF = {"kibana": "kbn-xsrf", "opensearch-dashboards": "osd-xsrf"}


def import_ndjson(url: str, product: str, ndjson: bytes, auth: Auth | None = None,
                  timeout: float = 30.0) -> dict:
    """POST `ndjson` to `url`/api/saved_objects/_import?overwrite=true; the answer's JSON.

    Honours the same credentials and TLS settings (CA, verification) as the engine."""
    import urllib3

    url, auth = split_credentials(url, auth)  # the URL's own credentials, never shown
    headers = {XSRF[product]: "esrank", **auth.header("ApiKey")}
    target = f"{url.rstrip('/')}/api/saved_objects/_import?overwrite=true"
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED" if auth.verify_certs else "CERT_NONE",
                               ca_certs=auth.ca_certs, retries=False, timeout=timeout)
    try:
        response = pool.request("POST", target, headers=headers,
                                fields={"file": ("esrank.ndjson", ndjson, "application/ndjson")})
    except urllib3.exceptions.HTTPError as exc:
        raise EngineError("import saved objects", f"cannot reach {url} ({exc})",
                          target=url) from exc
    try:
        answer = json.loads(response.data or b"{}")
    except json.JSONDecodeError:
        answer = {"raw": response.data[:200].decode("utf-8", "replace")}
    if response.status >= 300 or not answer.get("success", False):
        raise EngineError("import saved objects", str(answer.get("errors") or answer),
                          target=target, status=response.status)
    return answer
