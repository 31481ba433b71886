"""The query-time sltr params: what a feature set's declared params get from the query text,
its embedding and the cross-encoder."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from esrank.core.errors import InputError, MissingScorerError, ScorerError
from esrank.core.feature_set import QueryParam
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder

log = logging.getLogger(__name__)


class ParamBuilder:
    """Builds each query's sltr params: a string param gets the query text, a vector param its
    embedding, and a `source: cross_encoder` param the relevance of each of the query's docs
    (`docs`: per query, doc id -> the text the cross-encoder reads). Shopper params are the
    shopper's, added by the caller.

    >>> build = query_params(fs.params, encoder, cross_encoder=ce)   # doctest: +SKIP
    >>> build(["usb cable"], [{"p1": "USB-C cable, 1 m"}])[0]["ce_scores"]  # doctest: +SKIP
    [{'term': 'p1', 'weight': 0.93}]
    """

    def __init__(self, params: Sequence[QueryParam], encoder: Encoder | None,
                 cross_encoder: CrossEncoder | None, source: str | None):
        self.params = [p for p in params if p.source == "query"]
        self.scored = [p for p in params if p.source == "cross_encoder"]
        self.encoder, self.cross_encoder = encoder, cross_encoder
        for p in self.params:
            if p.type == "number":
                raise InputError(f"param {p.name!r} is a number: esrank cannot derive it from "
                                 "the query text", source=source)
            if p.type == "vector" and encoder is None:
                raise MissingScorerError("encoder", f"param {p.name!r} needs a query encoder",
                                         source=source)
            if p.type == "vector" and p.dims != encoder.dims:
                raise InputError(f"param {p.name!r} has {p.dims} dims, the encoder makes "
                                 f"{encoder.dims}", source=source)
        if self.scored and cross_encoder is None:
            raise MissingScorerError(
                "cross-encoder", f"param {self.scored[0].name!r} is filled by a cross-encoder: "
                "set ESRANK_CROSS_ENCODER (the one the features were logged with)", source=source)

    @property
    def embeds(self) -> bool:
        """Whether the params hold the query's embedding (a vector param)."""
        return self.encoder is not None and any(p.type == "vector" for p in self.params)

    @property
    def needs_docs(self) -> bool:
        """Whether each query's params depend on its docs (a cross-encoder param)."""
        return bool(self.scored)

    def __call__(self, queries: list[str], docs: Sequence[Mapping[str, str]] | None = None,
                 vectors: np.ndarray | None = None) -> list[dict]:
        """Each query's params; `vectors`: the queries' embeddings (the encoder's output) where
        the caller has them already (the recall stage's kNN search embeds the same queries)."""
        if self.scored and (docs is None or len(docs) != len(queries)):
            raise ValueError("cross-encoder params need each query's doc texts")
        if self.embeds and vectors is None:
            vectors = scored("encoder", self.encoder.encode, queries)
        out = []
        for i, text in enumerate(queries):
            params = {p.name: text if p.type == "string" else vectors[i].tolist()
                      for p in self.params}
            if self.scored:
                ids = list(docs[i])
                weights = scored("cross-encoder", self.cross_encoder.relevance, text,
                                  [docs[i][d] for d in ids]) if ids else []
                params.update({p.name: [{"term": d, "weight": float(w)}
                                        for d, w in zip(ids, weights, strict=True)]
                               for p in self.scored})
            out.append(params)
        return out


def scored(scorer: str, call: Callable, *args):
    """`call(*args)`; any failure becomes a ScorerError naming `scorer`."""
    try:
        return call(*args)
    except Exception as exc:
        raise ScorerError(scorer, exc) from exc


def query_params(params: Sequence[QueryParam], encoder: Encoder | None, *,
                 source: str | None = None, cross_encoder: CrossEncoder | None = None
                 ) -> ParamBuilder:
    """The `ParamBuilder` for a feature set's declared `params`; `source` names it in errors."""
    return ParamBuilder(params, encoder, cross_encoder, source)


# the shopper params esrank fills, by name and type (a feature set's `source: shopper` params)
SHOPPER_PARAMS = {"shopper_brands": "weights", "shopper_price": "number",
                  "shopper_price_scale": "number"}
