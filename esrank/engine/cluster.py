"""The cluster under the engine seam: a Transport, and the index, document and search
operations any OpenSearch or Elasticsearch cluster answers, no plugin needed.

The plugin's operations (feature store, models, `sltr` rescores) are esrank.engine.base's
Engine, which is a Cluster.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from esrank.core.errors import EngineError

BUSY = (429, 503)  # "try again later": bulk retries these
# kept-alive connections per node: more than the sidecar's request threads (32 by default)
# and its UBI writer; a smaller pool drops and reopens connections under load
CONNECTIONS_PER_NODE = 64


def failover(urls: Sequence[str]) -> int:
    """How often a request is sent again when it cannot reach a node (refused, reset): once
    per other node, so it tries each; never for a timeout or an HTTP error, whose request the
    engine may have carried out."""
    return len(urls) - 1


# every esrank index gets a replica once the cluster has a second node to hold it
REPLICAS = {"auto_expand_replicas": "0-1"}
# the settings of esrank's own small indices (registry, leases, UBI, profiles, results)
SMALL_INDEX = {"index": {"number_of_shards": 1, **REPLICAS}}
# the most source bytes one bulk request carries: well under the engines' 100 MB
# http.max_content_length, whatever the batch size and document size
MAX_BULK_BYTES = 10_000_000


class Transport(Protocol):
    """Moves one request; raises EngineError(operation, reason, target=, status=)."""

    flavor: str

    def request(self, operation: str, method: str, path: str, *, body: Any = None,
                params: dict | None = None, target: str | None = None) -> Any:
        ...


class Cluster:
    """Index, document and search operations on one cluster, over its transport."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def _call(self, operation: str, method: str, path: str, **kw: Any) -> Any:
        return self.transport.request(operation, method, path, **kw)

    def _find(self, operation: str, path: str, target: str, params: dict | None = None) -> Any:
        """A GET whose 404 means "not there": None instead of an error."""
        try:
            return self._call(operation, "GET", path, target=target, params=params)
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    # -- cluster -------------------------------------------------------------------------------

    def health(self) -> dict:
        return self._call("cluster health", "GET", "/_cluster/health")

    def shard_copies(self, index: str) -> list[dict]:
        """Each copy of each shard of `index` (a pattern, or hidden indices' names too): index,
        shard, prirep (p/r), state and node."""
        return self._call("list shards", "GET", f"/_cat/shards/{index}", target=index,
                          params={"format": "json", "h": "index,shard,prirep,state,node"})

    def plugins(self) -> set[str]:
        rows = self._call("list plugins", "GET", "/_cat/plugins", params={"format": "json"})
        return {row["component"] for row in rows}


    # -- documents (esrank's own records) --------------------------------------------------------

    def get_document(self, index: str, doc_id: str) -> tuple[dict, dict] | None:
        """(source, version) of a document, or None; version is what `put_document` checks."""
        doc = self._find("get document", f"/{index}/_doc/{quote(doc_id, safe='')}", index)
        if not doc or not doc.get("found"):
            return None
        return doc["_source"], {"if_seq_no": doc["_seq_no"],
                                "if_primary_term": doc["_primary_term"]}

    def get_documents(self, index: str, doc_ids: Iterable[str]) -> dict[str, dict]:
        """id -> source of the documents among `doc_ids` that `index` holds, in one request
        (realtime: a bulk's documents count before a refresh); none when the index is
        missing. Any other per-document failure is an EngineError, never "not there"."""
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return {}
        found = self._call("get documents", "POST", f"/{index}/_mget", body={"ids": ids},
                           target=index)
        out = {}
        for doc in found["docs"]:
            error = doc.get("error")
            if isinstance(error, dict) and error.get("type") != "index_not_found_exception":
                raise EngineError("get documents", reason_of(doc, error), target=index)
            if doc.get("found"):
                out[doc["_id"]] = doc["_source"]
        return out

    def put_document(self, index: str, doc_id: str, source: dict,
                     version: dict | None = None, *, visible: bool = True) -> dict:
        """Write a document (`visible`: to searches on return; a GET by id sees it at once
        either way); with `version`, only if nobody changed it since it was read, without,
        only if it does not exist (else EngineError with status 409). Returns its new
        version."""
        params = {"refresh": "wait_for" if visible else "false", **(version or {})}
        if version is None:
            params["op_type"] = "create"
        answer = self._call("write document", "PUT", f"/{index}/_doc/{quote(doc_id, safe='')}",
                            body=source, params=params, target=index)
        return {"if_seq_no": answer["_seq_no"], "if_primary_term": answer["_primary_term"]}

    def delete_document(self, index: str, doc_id: str, version: dict) -> None:
        """Delete a document only if nobody changed it since `version` (else EngineError with
        status 409, or 404 when it is gone)."""
        self._call("delete document", "DELETE", f"/{index}/_doc/{quote(doc_id, safe='')}",
                   params=version, target=index)

    # -- indices ---------------------------------------------------------------------------------

    def create_index(self, index: str, body: dict) -> None:
        self._call("create index", "PUT", f"/{index}", body=body, target=index)

    def ensure_index(self, index: str, body: dict) -> bool:
        """Create `index` unless it exists (another process creating it at the same moment
        is fine); True when this call created it."""
        if self.index_exists(index):
            return False
        try:
            self.create_index(index, body)
        except EngineError as exc:
            if exc.reason.startswith("resource_already_exists_exception"):
                return False
            raise
        return True

    def delete_index(self, index: str) -> None:
        self._call("delete index", "DELETE", f"/{index}", target=index)

    def alias_targets(self, alias: str) -> list[str]:
        return sorted(self._find("get alias", f"/_alias/{alias}", alias) or [])

    def indices(self, pattern: str) -> list[str]:
        """Names of the concrete indices matching `pattern` (e.g. "products-*")."""
        rows = self._call("list indices", "GET", f"/_cat/indices/{pattern}",
                          params={"format": "json", "h": "index"}, target=pattern)
        return sorted(row["index"] for row in rows)

    def index_exists(self, index: str) -> bool:
        return bool(self._find("check index", f"/{index}/_settings", index))

    def wait_for_index(self, index: str) -> None:
        """Return once every shard of `index` has started (a create that another client has
        in flight may still be starting them); the engine waits up to 30 s."""
        # not wait_for_status=yellow: a new index counts as yellow while its primaries start.
        # No "timeout" param: opensearch-py would take it for the HTTP request's own.
        self._call("wait for index", "GET", f"/_cluster/health/{index}",
                   params={"wait_for_active_shards": "all"}, target=index)

    def put_settings(self, index: str, settings: dict) -> None:
        self._call("put settings", "PUT", f"/{index}/_settings", body={"index": settings},
                   target=index)

    def put_mapping(self, index: str, body: dict) -> None:
        self._call("put mapping", "PUT", f"/{index}/_mapping", body=body, target=index)

    def mapping(self, index: str) -> dict:
        """Concrete index name -> {"mappings": {...}} for an index or alias."""
        return self._call("get mapping", "GET", f"/{index}/_mapping", target=index)

    def swap_alias(self, alias: str, new_index: str, old_indices: Sequence[str], *,
                   clear: str | None = None) -> None:
        """Point `alias` at `new_index` alone, in one atomic step, if it still points at every
        one of `old_indices` (a compare-and-swap: else EngineError with status 404 and nothing
        changes); `clear`: an index pattern the alias is also taken off."""
        actions: list[dict] = [{"remove": {"index": old, "alias": alias, "must_exist": True}}
                               for old in old_indices]
        if clear:
            actions.append({"remove": {"index": clear, "alias": alias}})
        actions.append({"add": {"index": new_index, "alias": alias}})
        self._call("swap alias", "POST", "/_aliases", body={"actions": actions}, target=alias)

    def bulk(self, index: str, docs: Iterable[tuple[str, dict]], *, retries: int = 5,
             backoff: float = 0.5, update: bool = False) -> list[tuple[str, str]]:
        """Index (id, source) pairs (with `update`: merge `source` into the existing documents,
        a partial update); returns (id, reason) for each document the engine refused.

        Requests carry at most MAX_BULK_BYTES (a larger document goes alone). A busy engine
        (HTTP 429/503, for the whole request or for some documents) is asked again after 0.5,
        1, 2, 4, 8 s, then its refusals are returned like any other.
        """
        op = "update" if update else "index"
        group: dict[str, str] = {}
        size, refused = 0, []
        for doc_id, source in docs:
            line = json.dumps({"doc": source} if update else source)
            if group and size + len(line) > MAX_BULK_BYTES:
                refused += self._bulk(index, op, group, retries, backoff)
                group, size = {}, 0
            group[doc_id] = line
            size += len(line)
        return refused + (self._bulk(index, op, group, retries, backoff) if group else [])

    def _bulk(self, index: str, op: str, pending: dict[str, str], retries: int,
              backoff: float) -> list[tuple[str, str]]:
        """One bulk request (doc id -> its JSON line), retried while the engine is busy."""
        refused: list[tuple[str, str]] = []
        for attempt in range(retries + 1):
            if not pending:
                break
            lines = []
            for doc_id, line in pending.items():
                lines += [json.dumps({op: {"_index": index, "_id": doc_id}}), line]
            busy = attempt < retries
            try:
                result = self._call("bulk index", "POST", "/_bulk",
                                    body="\n".join(lines) + "\n", target=index)
            except EngineError as exc:
                if exc.status in BUSY and busy:
                    time.sleep(backoff * 2 ** attempt)
                    continue
                raise
            retry = {}
            for item in result.get("items", []):
                answer = item.get(op, {})
                if "error" not in answer:
                    continue
                doc_id = answer.get("_id", "?")
                if answer.get("status") in BUSY and busy and doc_id in pending:
                    retry[doc_id] = pending[doc_id]
                else:
                    err = answer["error"]
                    refused.append((doc_id, f"{err.get('type')}: {err.get('reason')}"))
            pending = retry
            if pending:
                time.sleep(backoff * 2 ** attempt)
        return refused

    def refresh(self, index: str) -> None:
        self._call("refresh", "POST", f"/{index}/_refresh", target=index)

    def count(self, index: str) -> int:
        return int(self._call("count", "GET", f"/{index}/_count", target=index)["count"])

    def search(self, index: str, body: dict) -> dict:
        return self._call("search", "POST", f"/{index}/_search", body=body, target=index)

    def rank_eval(self, index: str, requests: list[dict], metric: dict) -> dict | None:
        """The engine's own `_rank_eval`: {"metric_score", "details": {id: {...}}}; None when
        the engine has no rank-eval module."""
        try:
            return self._call("rank eval", "POST", f"/{index}/_rank_eval",
                              body={"requests": requests, "metric": metric}, target=index)
        except EngineError as exc:
            if "no handler found" in exc.reason:
                return None
            raise

    def msearch(self, index: str, bodies: Sequence[dict]) -> list[dict]:
        """Run several searches in one request; a failed one raises EngineError.

        Each search names its body's digest as its `preference`: the same search goes to the
        same shard copies every time, so that on a replicated cluster a query's candidates (at
        the edge of a list, the copies may order ties and graph neighbours otherwise) are the
        same when it is logged, evaluated and served, while different searches spread over the
        copies."""
        lines = []
        for body in bodies:
            line = json.dumps(body)
            digest = hashlib.blake2b(line.encode(), digest_size=8).hexdigest()
            lines += [json.dumps({"index": index, "preference": digest}), line]
        result = self._call("multi-search", "POST", "/_msearch", body="\n".join(lines) + "\n",
                            target=index)
        responses = result.get("responses", [])
        for response in responses:
            if "error" in response:
                raise EngineError("multi-search", reason_of(response, "failed"), target=index,
                                  status=response.get("status"))
        return responses


def reason_of(info: Any, fallback: Any) -> str:
    """The engine's own words: error.root_cause[0].reason when present."""
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        err = info["error"]
        causes = err.get("root_cause") or [err]
        cause = causes[0]
        reason = f"{cause.get('type')}: {cause.get('reason')}"
        deeper = err.get("caused_by") or (err.get("failed_shards") or [{}])[0].get("reason", {})
        if isinstance(deeper, dict) and deeper.get("caused_by"):
            reason += f" (caused by {deeper['caused_by'].get('reason')})"
        return reason
    if isinstance(info, dict) and "error" in info:
        return str(info["error"])
    return str(info or fallback)
