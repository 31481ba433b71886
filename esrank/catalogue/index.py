"""Catalogue indexing: product files -> documents with embeddings -> a fresh index.

Two vectors per product: `title_vector` (the title) and `text_vector` (title and short
description, "TITLE. DESCRIPTION"), both from the same encoder as the queries.

Products are read from JSON arrays, JSONL, or zips of those. Each run builds a new concrete
index and then moves the alias onto it in one step, so searches never see a half-built index
and a failed run leaves what is live untouched. A build that indexed nothing, rejected more
products than allowed, or would drop more of the live products than allowed, never goes live;
the previous index is kept after a move. One run at a time per alias (a lease in the engine).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esrank.catalogue.products import RawProduct, read_products, text_of, to_document
from esrank.core.batches import batched
from esrank.core.errors import ConfigError, EngineError, InputError
from esrank.core.stamps import DIGITS, utc
from esrank.engine import Engine
from esrank.engine.cluster import REPLICAS
from esrank.engine.dialect import Dialect
from esrank.engine.lease import TTL, Lease
from esrank.models.encoder import Encoder, same_space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    doc_id: str
    where: str
    reason: str


@dataclass
class IndexReport:
    alias: str
    index: str
    indexed: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0
    kept: list[str] = field(default_factory=list)  # earlier complete builds, to go back to
    encoder: str = ""  # the encoder, and the embedding cache's figures when there is one
    replaced: int = 0  # documents the alias served before the move

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"alias": self.alias, "index": self.index, "indexed": self.indexed,
                "rejected": [r.__dict__ for r in self.rejected], "seconds": round(self.seconds, 2),
                "docs_per_second": round(self.docs_per_second, 1), "kept": self.kept,
                "encoder": self.encoder, "replaced": self.replaced}


ID_FIELD = "id"  # each document's id again, as a keyword with doc values (fast to read back)
BUILD = "esrank_build"  # the mapping's _meta key: is the index a complete build
ENCODER = "esrank_encoder"  # ... and the key of the encoder that embedded it (Encoder.key)
GRAPH = "esrank_graph"  # ... and whether its vectors carry the kNN graph
VECTOR_FIELD = "text_vector"  # the vector the recall stage's kNN searches


def index_body(dialect: Dialect, dims: int, encoder_key: str = "", graph: bool = True) -> dict:
    """Explicit mappings: analysed text, keywords, numbers, and the vectors in the engine's
    vector type, `text_vector` with the kNN graph the recall stage searches (`graph`; the
    title's too where the engine graphs every vector); `_meta` records the build state, the
    encoder and whether there is a graph."""
    text_kw = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0,
                     **dialect.index_settings(graph)},
        "mappings": {
            # complete: every product in
            "_meta": {BUILD: "partial", ENCODER: encoder_key, GRAPH: graph},
            "dynamic": "strict",
            "properties": {
                ID_FIELD: {"type": "keyword"},
                "title": text_kw,
                "name": {"type": "keyword"},
                "short_description": {"type": "text"},
                "supplier": text_kw,
                "ean": {"type": "keyword"},
                "price": {"type": "float"},
                "date_released": {"type": "date"},
                "image": {"type": "keyword", "index": False},
                "attributes": {"type": "text"},
                # thousands of typed attributes: kept in _source, not mapped field by field
                "attrs": {"type": "object", "enabled": False},
                "title_vector": dialect.vector_field(dims, graph and dialect.graphs_every_vector),
                VECTOR_FIELD: dialect.vector_field(dims, graph),
            },
        },
    }


def index_encoder(engine: Engine, alias: str) -> str | None:
    """The key of the encoder that embedded `alias`'s documents (None: an index esrank did not
    build, or one built before esrank recorded it)."""
    keys = {(m.get("mappings", {}).get("_meta") or {}).get(ENCODER)
            for m in engine.mapping(alias).values()}
    return keys.pop() if len(keys) == 1 else None


def check_index_encoder(engine: Engine, alias: str, encoder_key: str) -> None:
    """ConfigError when `alias`'s documents were embedded by other weights than the encoder
    with `encoder_key`: cosines between the two would be meaningless."""
    indexed = index_encoder(engine, alias)
    if indexed is not None and not same_space(indexed, encoder_key):
        raise ConfigError(f"index {alias!r} was embedded by encoder {indexed}; the configured "
                          f"encoder is {encoder_key}: query vectors would not match the "
                          "documents' (set ESRANK_ENCODER__MODEL to the index's encoder, or "
                          "run esrank index to re-embed the catalogue)")


def index_is_current(engine: Engine, alias: str, encoder_key: str) -> bool:
    """True when `alias` holds documents under the mapping this version of esrank writes,
    embedded by the encoder with `encoder_key` (another model or precision: not current), with
    the kNN graph the recall stage searches."""
    if not engine.alias_targets(alias) or engine.count(alias) == 0:
        return False
    live = engine.mapping(alias)
    wanted = index_body(engine.dialect, 0)["mappings"]["properties"]
    return all(set(m.get("mappings", {}).get("properties", {})) == set(wanted)
               and (m.get("mappings", {}).get("_meta") or {}).get(ENCODER) == encoder_key
               and has_graph(m) for m in live.values())


def has_graph(mapping: dict) -> bool:
    """Whether an index's mapping (one of `Engine.mapping`'s values) says its vectors carry the
    kNN graph."""
    return bool((mapping.get("mappings", {}).get("_meta") or {}).get(GRAPH))


def _valid_documents(chunk: list[RawProduct], report: IndexReport, seen: dict[str, str]
                     ) -> list[tuple[str, dict]]:
    """The chunk's products as documents; the invalid ones, and a second product with an id
    seen before (`seen`: id -> where it was first), go to `report.rejected`."""
    docs = []
    for product in chunk:
        where = f"{product.source}:{product.position}"
        try:
            doc_id, doc = to_document(product)
        except InputError as exc:
            doc_id = str(product.data.get("id", "?")) if isinstance(product.data, dict) else "?"
            report.rejected.append(Rejected(doc_id[:100], where, str(exc)))
            continue
        first = seen.setdefault(doc_id, where)
        if first != where:
            report.rejected.append(Rejected(doc_id, where, f"{where}: duplicate id {doc_id!r}, "
                                                           f"first at {first}"))
            continue
        docs.append((doc_id, doc))
    return docs


def _embed(encoder: Encoder, docs: list[dict]) -> None:
    """Both vectors of every document, in one encoder call (one length-sorted pass; a product
    without a description embeds one distinct text)."""
    vectors = encoder.encode([d["title"] for d in docs] + [text_of(d) for d in docs])
    for doc, title, text in zip(docs, vectors[:len(docs)], vectors[len(docs):], strict=True):
        doc["title_vector"], doc["text_vector"] = title, text


def _send(engine: Engine, index: str, docs: list[tuple[str, dict]], report: IndexReport
          ) -> None:
    """Bulk-send one batch (vectors as JSON lists, 7 decimals) and count it in `report`."""
    for _, doc in docs:
        for name in ("title_vector", "text_vector"):
            doc[name] = doc[name].astype(np.float64).round(7).tolist()
    refused = dict(engine.bulk(index, docs))
    for doc_id, reason in refused.items():
        report.rejected.append(Rejected(doc_id, index, reason))
    report.indexed += len(docs) - len(refused)


def _build_name(alias: str) -> str:
    """`<alias>-<UTC digits>-<milliseconds>`: an alias's builds sort by build time."""
    now = time.time()
    return f"{alias}-{utc(DIGITS, now)}-{int(now * 1000) % 1000:03d}"


def _is_build(alias: str, name: str) -> bool:
    """Whether index `name` is one of `alias`'s builds (not another alias's that shares the
    prefix, such as products-int8-... for products)."""
    return re.fullmatch(rf"{re.escape(alias)}-\d{{14}}-\d{{3}}", name) is not None


class RejectedBuildError(InputError):
    """A build with more rejected products than allowed (or none indexed): it was removed and
    the live index is unchanged; `report` lists the rejections."""

    def __init__(self, report: IndexReport, allowed: int):
        self.report = report
        what = ("no product was indexed" if report.indexed == 0 else
                f"{len(report.rejected)} products were rejected (allowed: {allowed})")
        super().__init__(f"{what}; {report.alias} still serves what it served before")


class ShrinkError(InputError):
    """A build that would take away more of the live documents than allowed: it was removed
    and the live index is unchanged."""

    def __init__(self, report: IndexReport, max_shrink: float):
        self.report = report
        lost = 1 - report.indexed / report.replaced
        super().__init__(f"the new build holds {report.indexed} products, {report.alias} serves "
                         f"{report.replaced}: {lost:.0%} fewer, more than the {max_shrink:.0%} "
                         f"allowed (--max-shrink); {report.alias} still serves what it served "
                         "before")


MAX_SHRINK = 0.1  # the share of the live documents a build may drop without being told to


def index_catalogue(engine: Engine, alias: str, paths: Iterable[Path], encoder: Encoder, *,
                    batch_size: int = 256, limit: int | None = None, allow_rejects: int = 0,
                    keep: int = 1, max_shrink: float = MAX_SHRINK, progress: bool = True,
                    lease_ttl: float = TTL) -> IndexReport:
    """Index products into `<alias>-<timestamp>` and point `alias` at it when done.

    One run at a time per alias: the run holds the alias's lease (esrank.engine.lease) from start to
    end, and another run on the same alias fails at once with LeaseHeldError, changing
    nothing. Bad products (and repeated ids) are reported (id, record, reason). While one batch
    is bulk-sent the next is embedded, so neither the engine nor the encoder waits for the
    other. The alias moves only when something was indexed, at most `allow_rejects` products
    were rejected and the build holds at least (1 - `max_shrink`) of the documents the alias
    serves; otherwise the new index is removed and RejectedBuildError or ShrinkError raised.
    The move is a compare-and-swap from what the alias pointed at when the run started: the
    alias ends on the new index alone, or (when it was moved by hand meanwhile) stays where it
    was moved. After it the `keep` newest earlier indices stay (to go back to by hand), older
    ones are deleted.
    """
    if keep < 0 or allow_rejects < 0 or not 0 <= max_shrink <= 1:
        raise InputError(f"keep ({keep}) and allow_rejects ({allow_rejects}) must be >= 0, "
                         f"max_shrink ({max_shrink}) in 0..1")
    started = time.monotonic()
    with Lease(engine, f"index:{alias}", f"esrank index --alias {alias}",
               ttl=lease_ttl) as lease:
        report, old = _build(engine, alias, paths, encoder, lease, batch_size=batch_size,
                             limit=limit, allow_rejects=allow_rejects, max_shrink=max_shrink,
                             progress=progress)
        # only complete builds (and what was live) are kept to go back to; a partial one (a
        # run killed before it could clean up) can never go live
        complete = {name: name in old or (m.get("mappings", {}).get("_meta") or {}).get(BUILD)
                    == "complete" for name, m in engine.mapping(f"{alias}-*").items()
                    if name != report.index and _is_build(alias, name)}
        earlier = sorted((name for name, ok in complete.items() if ok), reverse=True)
        report.kept = earlier[:keep]
        for name in [*earlier[keep:], *(name for name, ok in complete.items() if not ok)]:
            engine.delete_index(name)
    report.seconds = time.monotonic() - started
    return report


def _build(engine: Engine, alias: str, paths: Iterable[Path], encoder: Encoder, lease: Lease,
           *, batch_size: int, limit: int | None, allow_rejects: int, max_shrink: float,
           progress: bool) -> tuple[IndexReport, list[str]]:
    """Build a new index and swap `alias` onto it (index_catalogue, under its lease): the
    report, and the indices the alias pointed at before."""
    from esrank.models.embed_cache import CachedEncoder

    index = _build_name(alias)
    if engine.index_exists(alias) and not engine.alias_targets(alias):
        raise EngineError("index catalogue", f"{alias!r} is a concrete index, not an alias; "
                          "esrank manages it as an alias over versioned indices — rename or "
                          "delete it first", target=alias)
    old = engine.alias_targets(alias)  # the swap moves the alias from these, or not at all
    engine.create_index(index, index_body(engine.dialect, encoder.dims, encoder.key))
    report = IndexReport(alias=alias, index=index)
    status = encoder.progress if isinstance(encoder, CachedEncoder) else lambda: encoder.name
    try:
        _fill(engine, report, read_products(paths), encoder, status, batch_size=batch_size,
              limit=limit, progress=progress)
        for r in report.rejected:
            log.warning("rejected product %s (%s): %s", r.doc_id, r.where, r.reason)
        if report.indexed == 0 or len(report.rejected) > allow_rejects:
            raise RejectedBuildError(report, allow_rejects)
        engine.refresh(index)
        # built without replicas (half the work); the alias only moves once they are there
        engine.put_settings(index, REPLICAS)
        engine.wait_for_index(index)
        engine.put_mapping(index, {"_meta": {BUILD: "complete", ENCODER: encoder.key,
                                             GRAPH: True}})
        report.replaced = engine.count(alias) if old else 0
        if report.indexed < (1 - max_shrink) * report.replaced:
            raise ShrinkError(report, max_shrink)
        lease.check()
        try:
            engine.swap_alias(alias, index, old, clear=f"{alias}-*")
        except EngineError as exc:
            if exc.status != 404:
                raise
            raise EngineError("swap alias", f"{alias!r} was moved by someone else while this "
                              f"build ran (it pointed at {', '.join(old) or 'nothing'}); it "
                              "was left as it is", target=alias) from exc
    except BaseException:
        try:  # leave nothing half-written behind; the alias still points at the old index
            engine.delete_index(index)
        except EngineError as cleanup:
            log.error("could not remove the partial index %s: %s", index, cleanup)
        raise
    report.encoder = status()
    return report, old


def _fill(engine: Engine, report: IndexReport, products: Iterable[RawProduct], encoder: Encoder,
          status: Callable[[], str], *, batch_size: int, limit: int | None,
          progress: bool) -> None:
    """Embed and bulk-send `products` (at most `limit`) into `report.index`, counting them in
    `report`; while one batch is sent the next is embedded."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    seen: dict[str, str] = {}
    with (tqdm(desc=f"indexing {report.alias}", unit="doc", disable=not progress) as bar,
          ThreadPoolExecutor(1, thread_name_prefix="bulk") as sender):
        sending: Future | None = None
        taken = 0
        for chunk in batched(products, batch_size):
            if limit is not None:
                chunk = chunk[:max(0, limit - taken)]
                if not chunk:
                    break
            taken += len(chunk)
            docs = _valid_documents(chunk, report, seen)
            _embed(encoder, [doc for _, doc in docs])
            if sending is not None:
                sending.result()
            sending = sender.submit(_send, engine, report.index, docs, report)
            bar.update(len(chunk))
            bar.set_postfix_str(status(), refresh=False)
        if sending is not None:
            sending.result()
