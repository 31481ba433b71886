"""What differs between OpenSearch and Elasticsearch beyond the transport, written once each.

- the vector field of the catalogue mapping (`knn_vector` vs `dense_vector`);
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
WINDOW_PARAM, which the seam fills in (`Engine.ranked`). Vectors are mapped with
`index_options: flat` (raw float32, no quantization, no graph to build).
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


@dataclass(frozen=True)
class Dialect:
    """One engine flavour's mapping and feature quirks."""

    name: str
    ltr_plugin: str  # the component name in _cat/plugins

    def vector_field(self, dims: int) -> dict:
        raise NotImplementedError

    def index_settings(self) -> dict:
        return {}

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
    def vector_field(self, dims: int) -> dict:
        return {"type": "knn_vector", "dimension": dims}

    def index_settings(self) -> dict:
        # exact vectors from doc values: no native k-NN library needed
        return {"index.knn": False}

    def cosine(self, field: str, vector_param: str) -> dict:
        return {"params": [vector_param], "template_language": "script_feature",
                "template": {"lang": "painless",
                             "source": "(1.0 + cosineSimilarity(params.query_vector, "
                                       f"doc['{field}'])) / 2.0",
                             "params": {"extra_script_params": {"query_vector": vector_param}}}}


class ElasticsearchDialect(Dialect):
    def vector_field(self, dims: int) -> dict:
        return {"type": "dense_vector", "dims": dims, "index": True, "similarity": "cosine",
                "index_options": {"type": "flat"}}

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
    "opensearch": OpenSearchDialect("opensearch", "opensearch-ltr"),
    "elasticsearch": ElasticsearchDialect("elasticsearch", "ltr"),
}


def dialect(flavor: str) -> Dialect:
    try:
        return DIALECTS[flavor]
    except KeyError:
        raise ConfigError(f"unknown engine flavor {flavor!r} (opensearch, elasticsearch)"
                          ) from None
