"""What differs between OpenSearch and Elasticsearch beyond the transport, written once each.

- the vector field of the catalogue mapping (`knn_vector` vs `dense_vector`), with or without
  an HNSW graph, and the kNN query that searches the graph;
- the `vector_cosine` feature of a feature-set file, rendered for the engine's LTR plugin;
- the LTR plugin's name in `_cat/plugins`.

Both renderings log the same value for every document, (1 + cos) / 2, so a model trained on
one engine scores the same on the other.

OpenSearch: a painless `script_feature` calling k-NN's `cosineSimilarity` over the field's doc
values; it scores any document the rescore reaches.

Elasticsearch: a `knn` query (its server has no script language in every distribution; the
integ-test node has none). A knn query only scores the documents it retrieves, so the feature
is restricted by an `ids` filter to the documents being scored (the rescore window, or the
logged docs): with at most `k` candidates Lucene searches exactly (every filtered doc, exact
cosine), so every document in the window gets its value. The ids travel as the sltr param
WINDOW_PARAM, which the seam fills in (`Engine.ranked`).

The recall stage's vectors (`graph=True`) get an HNSW graph over raw float32 vectors on both
engines: OpenSearch k-NN's Lucene engine (it needs no native library; the default Faiss engine
does, and a node without it exits on the first refresh), Elasticsearch's `hnsw` (no
quantization: the exact cosine features read the same vectors). A vector without a graph is
`flat` on Elasticsearch; OpenSearch builds a graph for every `knn_vector` of an index with
`index.knn: true`, so there both vectors carry one. Both engines score a kNN hit (1 + cos) / 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from esrank.core.errors import ConfigError
from esrank.core.feature_set import Feature, FeatureSet

COSINE = "vector_cosine"  # esrank's template language, rendered per engine below
WINDOW_PARAM = "esrank_window"  # Elasticsearch: ids of the docs a cosine feature scores
MAX_WINDOW = 10_000  # Elasticsearch's largest knn `k` / `num_candidates`
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100  # the graph's links per node and build beam (both
# engines' defaults)
KNN_CANDIDATES = 100  # Elasticsearch: the fewest candidates per shard a kNN search explores


@dataclass(frozen=True)
class Dialect:
    """One engine flavour's mapping and feature quirks."""

    name: str
    ltr_plugin: str  # the component name in _cat/plugins
    graphs_every_vector: bool = False  # an index with one graph has one on every vector

    def vector_field(self, dims: int, graph: bool = False) -> dict:
        """The mapping of a vector field; `graph`: searchable by kNN (an HNSW graph)."""
        raise NotImplementedError

    def index_settings(self, graph: bool = False) -> dict:
        return {}

    def knn_query(self, field: str, vector: list[float], k: int) -> dict:
        """The query clause for the `k` nearest documents to `vector` in `field`'s graph."""
        raise NotImplementedError

    def cosine(self, field: str, vector_param: str) -> dict:
        """A `vector_cosine` feature's plugin dict, less its name."""
        raise NotImplementedError

    @property
    def window_param(self) -> str | None:
        """The sltr param that must carry the scored docs' ids, if this engine needs one."""
        return None

    def feature(self, feature: Feature) -> dict[str, Any]:
        """The feature in the plugin's schema, as this engine stores it."""
        if feature.template_language != COSINE:
            return feature.spec()
        template = feature.template
        assert isinstance(template, dict)  # the feature-set parser guarantees it
        return {"name": feature.name, **self.cosine(template["field"], feature.params[0])}

    def feature_set(self, feature_set: FeatureSet) -> dict[str, Any]:
        """Body of the plugin's create-feature-set request, features in file order."""
        return {"featureset": {"name": feature_set.engine_name,
                               "features": [self.feature(f) for f in feature_set.features]}}


class OpenSearchDialect(Dialect):
    def vector_field(self, dims: int, graph: bool = False) -> dict:
        if not graph:  # exact vectors from doc values, in an index without k-NN
            return {"type": "knn_vector", "dimension": dims}
        return {"type": "knn_vector", "dimension": dims, "method": {
            "name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
            "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}}}

    def index_settings(self, graph: bool = False) -> dict:
        return {"index.knn": graph}

    def knn_query(self, field: str, vector: list[float], k: int) -> dict:
        return {"knn": {field: {"vector": vector, "k": k}}}

    def cosine(self, field: str, vector_param: str) -> dict:
        return {"params": [vector_param], "template_language": "script_feature",
                "template": {"lang": "painless",
                             "source": "(1.0 + cosineSimilarity(params.query_vector, "
                                       f"doc['{field}'])) / 2.0",
                             "params": {"extra_script_params": {"query_vector": vector_param}}}}


class ElasticsearchDialect(Dialect):
    def vector_field(self, dims: int, graph: bool = False) -> dict:
        options = ({"type": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
                   if graph else {"type": "flat"})
        return {"type": "dense_vector", "dims": dims, "index": True, "similarity": "cosine",
                "index_options": options}

    def knn_query(self, field: str, vector: list[float], k: int) -> dict:
        return {"knn": {"field": field, "query_vector": vector, "k": k,
                        "num_candidates": min(MAX_WINDOW, max(2 * k, KNN_CANDIDATES))}}

    @property
    def window_param(self) -> str | None:
        return WINDOW_PARAM

    def cosine(self, field: str, vector_param: str) -> dict:
        template = (f'{{"knn": {{"field": {json.dumps(field)}, "query_vector": '
                    f'{{{{#toJson}}}}{vector_param}{{{{/toJson}}}}, "k": {MAX_WINDOW}, '
                    f'"num_candidates": {MAX_WINDOW}, "filter": {{"ids": {{"values": '
                    f'{{{{#toJson}}}}{WINDOW_PARAM}{{{{/toJson}}}}}}}}}}}}')
        return {"params": [vector_param, WINDOW_PARAM], "template_language": "mustache",
                "template": template}


DIALECTS: dict[str, Dialect] = {
    "opensearch": OpenSearchDialect("opensearch", "opensearch-ltr", graphs_every_vector=True),
    "elasticsearch": ElasticsearchDialect("elasticsearch", "ltr"),
}


def dialect(flavor: str) -> Dialect:
    try:
        return DIALECTS[flavor]
    except KeyError:
        raise ConfigError(f"unknown engine flavor {flavor!r} (opensearch, elasticsearch)"
                          ) from None
