"""Feature logging: judged (query, doc) pairs -> feature values from the engine -> a table.

Queries go to the plugin in msearch batches (one `sltr` + `ltr_log` search per query, with a
filter on that query's judged docs). Judged docs the index does not hold are reported, never
silently dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esrank.batches import batched
from esrank.catalogue import check_index_encoder, fetch_texts
from esrank.encoder import Encoder
from esrank.engine import Engine
from esrank.engine.base import logging_request, parse_ltr_log
from esrank.errors import InputError, MissingScorerError, ScorerError
from esrank.files import new_file
from esrank.judgments import JudgmentList
from esrank.query_text import bounded_query
from esrank.rerank import CrossEncoder
from esrank.types import FeatureMatrix, FeatureSet, QueryParam

log = logging.getLogger(__name__)


@dataclass
class LogReport:
    matrix: FeatureMatrix
    missing_docs: list[tuple[str, str]] = field(default_factory=list)  # (query, doc_id)
    seconds: float = 0.0


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

    def __call__(self, queries: list[str], docs: Sequence[Mapping[str, str]] | None = None
                 ) -> list[dict]:
        if self.scored and (docs is None or len(docs) != len(queries)):
            raise ValueError("cross-encoder params need each query's doc texts")
        vectors = _scored("encoder", self.encoder.encode, queries) if self.embeds else None
        out = []
        for i, text in enumerate(queries):
            params = {p.name: text if p.type == "string" else vectors[i].tolist()
                      for p in self.params}
            if self.scored:
                ids = list(docs[i])
                weights = _scored("cross-encoder", self.cross_encoder.relevance, text,
                                  [docs[i][d] for d in ids]) if ids else []
                params.update({p.name: [{"term": d, "weight": float(w)}
                                        for d, w in zip(ids, weights, strict=True)]
                               for p in self.scored})
            out.append(params)
        return out


def _scored(scorer: str, call: Callable, *args):
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


def doc_texts(engine: Engine, index: str, doc_ids: Sequence[Sequence[str]]
              ) -> list[dict[str, str]]:
    """Per query, doc id -> the text a cross-encoder reads, for its ids the index holds."""
    texts = fetch_texts(engine, index, {d for ids in doc_ids for d in ids})
    return [{d: texts[d] for d in dict.fromkeys(ids) if d in texts} for ids in doc_ids]


def log_judgments(engine: Engine, index: str, feature_set: FeatureSet, judgments: JudgmentList,
                  encoder: Encoder | None, *, window: int = 0,
                  first_pass: Callable[[str], dict] | None = None,
                  queries_per_request: int = 16, progress: bool = True,
                  shoppers: Mapping[str, dict] | None = None,
                  cross_encoder: CrossEncoder | None = None) -> LogReport:
    """Log every feature for every judged pair, and for the served window.

    With `window=N` and `first_pass` (a query clause built from the text: the BM25 first pass
    a model rescores), every doc of each query's first-pass top N is logged too, unjudged ones
    as grade 0, and each row records its first-pass rank (0 for a judged doc outside the
    window): what training needs to tell served candidates from docs judges found elsewhere,
    and to estimate what serving does. A feature set with a cross-encoder param needs
    `cross_encoder`: it scores each query's logged docs (judged and window alike).

    >>> report = log_judgments(engine, "products", fs, judgments, enc, window=100,
    ...                        first_pass=bm25_query)  # doctest: +SKIP
    >>> report.matrix.values.shape  # doctest: +SKIP
    (8557, 15)
    """
    import time

    from tqdm import tqdm

    if window and first_pass is None:
        raise InputError("logging a window needs the first-pass query to take it from")
    started = time.monotonic()
    params_for = query_params(feature_set.params, encoder, source=feature_set.source,
                              cross_encoder=cross_encoder)
    if params_for.embeds:
        check_index_encoder(engine, index, encoder.key)
    shopper = dict(shoppers or {})
    groups = list(judgments.by_query().items())
    rows: list[tuple[str, str, str, int, list[float], int, bool]] = []
    missing: list[tuple[str, str]] = []
    with tqdm(total=len(judgments), desc="logging features", unit="pair",
              disable=not progress) as bar:
        if encoder is not None:
            bar.set_postfix_str(f"queries embedded by {encoder.name}", refresh=False)
        for chunk in batched(groups, queries_per_request):
            texts = [bounded_query(js[0].query)[0] for _, js in chunk]  # as served
            windows = (_first_pass(engine, index, texts, window, first_pass) if window
                       else [[] for _ in chunk])
            ids = [list(dict.fromkeys([j.doc_id for j in js] + served))
                   for (_, js), served in zip(chunk, windows, strict=True)]
            docs = doc_texts(engine, index, ids) if params_for.needs_docs else None
            requests = [logging_request(feature_set, {**params, **shopper.get(qid, {})}, wanted)
                        for (qid, _), wanted, params in zip(chunk, ids, params_for(texts, docs),
                                                            strict=True)]
            responses = engine.ranked(index, requests)
            for (qid, js), served, response in zip(chunk, windows, responses, strict=True):
                logged = {h["_id"]: parse_ltr_log(h, feature_set.feature_names)
                          for h in response["hits"]["hits"]}
                rank = {d: r for r, d in enumerate(served, 1)}
                for j in js:
                    if j.doc_id in logged:
                        rows.append((qid, j.query, j.doc_id, j.grade, logged[j.doc_id],
                                     rank.get(j.doc_id, 0), True))
                    else:
                        missing.append((j.query, j.doc_id))
                judged = {j.doc_id for j in js}
                rows += [(qid, js[0].query, d, 0, logged[d], rank[d], False)
                         for d in served if d not in judged and d in logged]
                bar.update(len(js))
    if missing:
        log.warning("%d judged docs are not in %s (first: %s)", len(missing), index,
                    ", ".join(f"{q!r}/{d}" for q, d in missing[:5]))
    values = np.array([r[4] for r in rows], dtype=np.float32).reshape(-1, len(
        feature_set.feature_names))
    matrix = FeatureMatrix(feature_set.engine_name, feature_set.feature_names,
                           tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                           tuple(r[2] for r in rows), tuple(r[3] for r in rows), values,
                           tuple(r[5] for r in rows) if window else None,
                           tuple(r[6] for r in rows) if window else None,
                           {q: p for q, p in shopper.items() if p} or None,
                           cross_encoder.key if params_for.needs_docs else None,
                           encoder.key if params_for.embeds else None)
    return LogReport(matrix, missing, time.monotonic() - started)


def _first_pass(engine: Engine, index: str, texts: list[str], k: int,
                query_for: Callable[[str], dict]) -> list[list[str]]:
    """Per query, the doc ids of its first-pass top k, in rank order."""
    bodies = [{"size": k, "query": query_for(text), "_source": False} for text in texts]
    return [[h["_id"] for h in response["hits"]["hits"]]
            for response in engine.msearch(index, bodies)]


def write_ranklib(matrix: FeatureMatrix, path: Path) -> None:
    """SVMrank/RankLib text; a missing (NaN) feature is left out of its row, which XGBoost
    reads back as missing. The header names the features in order."""
    with new_file(path) as tmp, open(tmp, "w") as out:
        out.write(f"# feature_set: {matrix.feature_set}\n")
        for i, name in enumerate(matrix.feature_names, 1):
            out.write(f"# feature {i}: {name}\n")
        for qid, query, doc, grade, row in zip(matrix.qids, matrix.queries, matrix.doc_ids,
                                               matrix.grades, matrix.values, strict=True):
            feats = " ".join(f"{i}:{v:.9g}" for i, v in enumerate(row, 1) if not np.isnan(v))
            out.write(f"{grade} qid:{qid} {feats} # {doc} {query}\n")


def write_table(matrix: FeatureMatrix, path: Path, *, judgments_source: str | None = None,
                window: int = 0) -> None:
    """Parquet: qid, query, doc_id, grade, [first_pass_rank, judged], then one float32 column
    per feature (NaN kept).

    The file's metadata names the feature set and the feature order, so a reader can refuse a
    table that does not match the feature set it trains for.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"qid": list(matrix.qids), "query": list(matrix.queries),
               "doc_id": list(matrix.doc_ids), "grade": pa.array(matrix.grades, pa.int8())}
    if matrix.ranks is not None:
        columns["first_pass_rank"] = pa.array(matrix.ranks, pa.int32())
        columns["judged"] = pa.array(matrix.judged, pa.bool_())
    for i, name in enumerate(matrix.feature_names):
        columns[name] = pa.array(matrix.values[:, i], pa.float32())
    meta = {"feature_set": matrix.feature_set, "feature_names": list(matrix.feature_names),
            "judgments": judgments_source, "missing": "NaN: the plugin logged no value",
            "window": window, "shoppers": matrix.shoppers,
            "cross_encoder": matrix.cross_encoder, "encoder": matrix.encoder,
            "first_pass_rank": (f"rank in the query's first-pass top {window}; 0: a judged "
                                "doc outside it; unjudged window docs have grade 0, judged "
                                "false") if window else None}
    table = pa.table(columns).replace_schema_metadata({"esrank": json.dumps(meta)})
    with new_file(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: Path) -> FeatureMatrix:
    """Read a table written by `write_table`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"esrank")
    if raw is None:
        raise InputError("not an esrank training table (no esrank metadata)", source=str(path))
    meta = json.loads(raw)
    names = tuple(meta["feature_names"])
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise InputError(f"columns {missing} named in the metadata are absent", source=str(path))
    values = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]
                             ).astype(np.float32) if names else np.zeros((table.num_rows, 0))
    ranked = "first_pass_rank" in table.column_names
    return FeatureMatrix(meta["feature_set"], names,
                         tuple(table.column("qid").to_pylist()),
                         tuple(table.column("query").to_pylist()),
                         tuple(table.column("doc_id").to_pylist()),
                         tuple(int(g) for g in table.column("grade").to_pylist()), values,
                         tuple(table.column("first_pass_rank").to_pylist()) if ranked else None,
                         tuple(table.column("judged").to_pylist()) if ranked else None,
                         meta.get("shoppers"), meta.get("cross_encoder"), meta.get("encoder"))
