"""The engine seam: every `/_ltr` request, `sltr` rescore, `ltr_log` and `_ltrlog` parse,
written once over a Transport.

Adapters (opensearch.py, elasticsearch.py) only move JSON over HTTP and turn their client's
exceptions into EngineError; what differs between the engines' mappings and features is in
dialect.py; everything the LTR plugin understands is built here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from esrank.core.errors import EngineError, NameTakenError
from esrank.core.feature_set import FeatureSet
from esrank.engine.cluster import Cluster, Transport
from esrank.engine.dialect import dialect

LOG_NAME = "esrank"  # the sltr query's _name and the ltr_log spec's name


@dataclass(frozen=True)
class Rescore:
    """An `sltr` rescore of the first pass's top `window` docs: by a stored model, or (model
    None) by a stored feature set, whose features are then only logged."""

    feature_set: str  # the engine name, NAME@HASH
    params: dict
    model: str | None = None
    window: int = 100
    query_weight: float = 0.0  # 0: the model's score alone, as the parity gate scores it
    log: bool = False  # ltr_log each rescored doc's feature values into its hit
    # the features to compute (None: all); the others are missing, and need no params
    active_features: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Ranked:
    """One ranked search: a first-pass `query` (or exactly the docs `ids`), then a rescore."""

    query: dict | None = None
    size: int = 10
    source: list[str] | bool = False
    rescore: Rescore | None = None
    ids: tuple[str, ...] | None = None
    # a keyword field with doc values holding each doc's id: a first pass that only needs
    # the ids reads them there instead of from stored fields (4x faster for 100 hits)
    id_field: str | None = None

    @property
    def window(self) -> int:
        """How many first-pass docs the rescore sees."""
        return max(self.rescore.window, self.size) if self.rescore else self.size


class Engine(Cluster):
    """Plugin operations on one cluster (and one feature store); the index, document and
    search operations are its Cluster's.

    >>> engine = Engine(OpenSearchTransport("http://127.0.0.1:9200"))  # doctest: +SKIP
    >>> engine.put_feature_set(load_feature_set("feature_sets/chorus.yaml"))  # doctest: +SKIP
    """

    def __init__(self, transport: Transport, store: str | None = None):
        super().__init__(transport)
        self.store = store
        self.dialect = dialect(transport.flavor)
        self._window_sets: dict[str, bool] = {}  # feature set -> its features need the ids

    def _ltr(self, suffix: str = "") -> str:
        return (f"/_ltr/{self.store}" if self.store else "/_ltr") + suffix

    def _call(self, operation: str, method: str, path: str, **kw: Any) -> Any:
        try:
            return super()._call(operation, method, path, **kw)
        except EngineError as exc:
            # without the plugin, /_ltr is read as an (invalid) index name or has no handler
            if path.startswith("/_ltr") and ("no handler found" in exc.reason
                                             or "Invalid index name [_ltr" in exc.reason):
                raise EngineError(operation, "the engine has no Learning-to-Rank plugin "
                                  f"({exc.reason}); install it (see docs/engine.md)",
                                  target=exc.target, status=exc.status) from exc
            raise

    def has_ltr(self) -> bool:
        """Whether the engine has its Learning-to-Rank plugin."""
        return self.dialect.ltr_plugin in self.plugins()

    # -- feature store ---------------------------------------------------------------------------

    def store_exists(self) -> bool:
        # GET /_ltr lists stores (the default one as "_default_"); GET /_ltr/NAME says
        # {"exists": bool}.
        if self.store:  # a missing named store answers 404 {"exists": false}
            answer = self._find("check LTR store", self._ltr(), self._ltr())
            return bool(answer and answer.get("exists"))
        answer = self._call("check LTR store", "GET", "/_ltr", target="/_ltr")
        return "_default_" in answer.get("stores", {})

    def ensure_store(self) -> bool:
        """Create the feature store if missing; True when it was created."""
        if self.store_exists():
            return False
        self._call("create LTR store", "PUT", self._ltr(), target=self._ltr())
        return True

    def get_feature_set(self, name: str) -> dict | None:
        """The stored feature set's plugin document (`{"name", "features": [...]}`) or None."""
        doc = self._find("get feature set", self._ltr(f"/_featureset/{name}"), name)
        if not doc or not doc.get("found", True):
            return None
        return doc.get("_source", {}).get("featureset")

    def list_feature_sets(self, prefix: str = "") -> dict[str, dict]:
        """Stored feature sets whose name starts with `prefix`: name -> plugin document."""
        params = {"prefix": prefix, "size": 1000} if prefix else {"size": 1000}
        result = self._call("list feature sets", "GET", self._ltr("/_featureset"),
                            params=params, target=self._ltr())
        return {hit["_source"]["name"]: hit["_source"]["featureset"]
                for hit in result.get("hits", {}).get("hits", [])}

    def put_feature_set(self, feature_set: FeatureSet) -> bool:
        """Store the set under its versioned name, create-only (the plugin's PUT refuses an
        existing name, so two pushes cannot race an overwrite). True when created."""
        name = feature_set.engine_name
        try:
            self._call("create feature set", "PUT", self._ltr(f"/_featureset/{name}"),
                       body=self.dialect.feature_set(feature_set), target=name)
        except EngineError as exc:
            if exc.status == 409:  # NAME@HASH names its content: the stored one is the same
                return False
            raise
        return True

    # -- models ----------------------------------------------------------------------------------

    def create_model(self, feature_set: str, name: str, model: dict) -> None:
        """Store `model` (the plugin's {"type", "definition", ...}) under `name`; a name that
        exists is a NameTakenError (the plugin never overwrites a model)."""
        try:
            self._call("create model", "POST",
                       self._ltr(f"/_featureset/{feature_set}/_createmodel"),
                       body={"model": {"name": name, "model": model}}, target=name)
        except EngineError as exc:
            # both plugins: 405 "Element of type [model] are not updatable, please create a
            # new one instead."
            if exc.status == 405 and "not updatable" in exc.reason:
                raise NameTakenError("create model", f"a model named {name} exists already "
                                     "(the plugin never overwrites one)", target=name,
                                     status=exc.status) from exc
            raise

    def get_model(self, name: str) -> dict | None:
        """The stored model document (`{"name", "feature_set", "model"}`) or None."""
        doc = self._find("get model", self._ltr(f"/_model/{name}"), name)
        if not doc or not doc.get("found", True):
            return None
        return doc.get("_source", {}).get("model")

    def list_models(self, prefix: str = "") -> list[str]:
        """The store's model names (none while the store does not exist)."""
        params = {"prefix": prefix, "size": 1000} if prefix else {"size": 1000}
        result = self._find("list models", self._ltr("/_model"), self._ltr(), params) or {}
        return sorted(hit["_source"]["name"] for hit in result.get("hits", {}).get("hits", []))

    def delete_model(self, name: str) -> None:
        self._call("delete model", "DELETE", self._ltr(f"/_model/{name}"), target=name)
        # the plugin caches compiled models per node; a deleted name must not keep scoring
        self._call("clear LTR cache", "POST", self._ltr("/_clearcache"), target=self._ltr())

    # -- ranked searches: first pass, sltr rescore, ltr_log (built here and nowhere else) -------

    def ranked(self, index: str, requests: Sequence[Ranked]) -> list[dict]:
        """Run ranked searches (one msearch, two where the engine needs the window's ids)."""
        return self.msearch(index, self.ranked_bodies(index, requests))

    def ranked_bodies(self, index: str, requests: Sequence[Ranked]) -> list[dict]:
        """The search bodies for `requests`. Where a rescored feature set needs the scored
        docs' ids (Elasticsearch cosine features), the first pass runs here to find them and
        the body scores exactly those docs, as the one-request rescore would."""
        needs = [r.rescore is not None and self.needs_window(r.rescore.feature_set)
                 for r in requests]
        first = [first_pass_body(r) for r, need in zip(requests, needs, strict=True)
                 if need and r.ids is None]
        windows = iter(self.msearch(index, first) if first else [])
        bodies = []
        for r, need in zip(requests, needs, strict=True):
            ids = r.ids
            if need and ids is None:
                ids = tuple(h["fields"][r.id_field][0] if r.id_field else h["_id"]
                            for h in next(windows)["hits"]["hits"])
            bodies.append(self._ranked_body(r, ids, need))
        return bodies

    def _ranked_body(self, r: Ranked, ids: Sequence[str] | None, window_ids: bool) -> dict:
        query = r.query
        if ids is not None:
            # the first-pass score only matters when the rescore keeps part of it
            keep = r.query and not (r.rescore and r.rescore.query_weight == 0)
            query = {"bool": {"filter": [{"ids": {"values": list(ids)}}],
                              **({"must": [r.query]} if keep else {})}}
        body: dict = {"size": r.size, "query": query or {"match_all": {}}, "_source": r.source}
        if r.rescore is None:
            return body
        rs = r.rescore
        params = {**rs.params, **({self.dialect.window_param: list(ids or ())}
                                  if window_ids else {})}
        clause: dict = {"_name": LOG_NAME, "params": params}
        if rs.active_features is not None:
            clause["active_features"] = list(rs.active_features)
        clause["model" if rs.model else "featureset"] = rs.model or rs.feature_set
        body["rescore"] = {"window_size": r.window, "query": {
            "rescore_query": {"sltr": clause}, "query_weight": rs.query_weight,
            "rescore_query_weight": 1.0}}
        if rs.log:
            body["ext"] = {"ltr_log": {"log_specs": {"name": LOG_NAME, "rescore_index": 0,
                                                     "missing_as_zero": False}}}
        return body

    def needs_window(self, feature_set: str) -> bool:
        """Whether the stored feature set's features need the scored docs' ids (WINDOW_PARAM)."""
        param = self.dialect.window_param
        if param is None:
            return False
        if feature_set not in self._window_sets:
            stored = self.get_feature_set(feature_set)
            if stored is None:  # not pushed (yet): the plugin will name the problem
                return False
            self._window_sets[feature_set] = any(param in (f.get("params") or [])
                                                 for f in stored.get("features", []))
        return self._window_sets[feature_set]

    def log_features(self, index: str, feature_set: FeatureSet, params: dict,
                     doc_ids: Sequence[str]) -> dict[str, list[float]]:
        """Every feature's value for each doc, in feature-set order; NaN where it did not match.

        Missing values stay NaN (`missing_as_zero: false`): what to serve for them is the
        model's decision, not the logger's.
        """
        [result] = self.ranked(index, [logging_request(feature_set, params, doc_ids)])
        return {hit["_id"]: parse_ltr_log(hit, feature_set.feature_names)
                for hit in result["hits"]["hits"]}


def first_pass_body(r: Ranked) -> dict:
    """The search for a request's window: its first-pass top `window`, ids only."""
    body = {"size": r.window, "query": r.query, "_source": False}
    if r.id_field:
        body.update(stored_fields="_none_", docvalue_fields=[r.id_field])
    return body


def logging_request(feature_set: FeatureSet, params: dict, doc_ids: Sequence[str]) -> Ranked:
    """A search that returns exactly `doc_ids`, each with every feature's logged value."""
    return Ranked(size=len(doc_ids), ids=tuple(doc_ids),
                  rescore=Rescore(feature_set.engine_name, params, window=len(doc_ids),
                                  log=True, active_features=feature_set.active_features(params)))


def parse_ltr_log(hit: dict, feature_names: Sequence[str]) -> list[float]:
    """One hit's `_ltrlog` entries as floats in feature order (NaN for missing)."""
    try:
        entries = hit["fields"]["_ltrlog"][0][LOG_NAME]
    except (KeyError, IndexError) as exc:
        raise EngineError("parse ltr_log", "the hit has no _ltrlog entry (is the LTR plugin "
                          "installed and the sltr query named?)", target=hit.get("_id")) from exc
    values = {e["name"]: float(e["value"]) if "value" in e else math.nan for e in entries}
    unknown = set(values) - set(feature_names)
    if unknown or len(values) != len(feature_names):
        raise EngineError("parse ltr_log", f"engine logged {sorted(values)}, the feature set "
                          f"has {list(feature_names)}", target=hit.get("_id"))
    return [values[name] for name in feature_names]
