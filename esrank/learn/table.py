"""The training table: logged feature values per (query, doc), and its Parquet/RankLib files.

`FeatureMatrix` is the record; `write_table`/`read_table` are its one writer and reader. A
table is one Parquet file, or a dataset: a folder of part files (`write_part`), each a table
file holding whole query groups, which a distributed trainer reads one part per task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from esrank.catalogue.recall import Recall
from esrank.core.errors import InputError
from esrank.core.files import new_file


@dataclass(frozen=True)
class FeatureMatrix:
    """Logged features: one row per (query, doc), columns in feature-set order.

    Missing values are NaN (the plugin logged no value); nothing is filled in here.
    `ranks` is each row's place among its query's candidates (1 = top; 0 = outside them: a
    judged doc the judges found elsewhere); `judged` says whether the grade came from a
    judgment (else: an unjudged candidate, grade 0). Both are None for a table logged without
    candidates, which cannot estimate what serving does. `recall` names the candidate set
    (esrank.catalogue.recall), `lists` each row's (BM25 rank, kNN rank), 0 where a list
    lacks the doc.
    """

    feature_set: str  # the engine name, NAME@HASH
    feature_names: tuple[str, ...]
    qids: tuple[str, ...]
    queries: tuple[str, ...]
    doc_ids: tuple[str, ...]
    grades: tuple[int, ...]
    values: Any  # numpy.ndarray, shape (rows, len(feature_names)), float32
    ranks: tuple[int, ...] | None = None
    judged: tuple[bool, ...] | None = None
    # qid -> the shopper params its features were logged with (personal rows only)
    shoppers: dict[str, dict[str, Any]] | None = None
    cross_encoder: str | None = None  # the key of the cross-encoder that filled its params
    encoder: str | None = None  # the key of the encoder that embedded its queries (and index)
    recall: Recall | None = None
    lists: tuple[tuple[int, int], ...] | None = None

    def __len__(self) -> int:
        return len(self.doc_ids)

    def blank(self, names: Sequence[str]) -> FeatureMatrix:
        """The matrix with these features' values removed (NaN everywhere): a model trained
        on it cannot split on them, yet keeps the feature set's order."""
        values = self.values.copy()
        for name in names:
            values[:, self.feature_names.index(name)] = float("nan")
        return replace(self, values=values)

    def docs_by_query(self, limit: int | None = None) -> dict[str, list[str]]:
        """Query text -> its rows' doc ids, each once, in table order (the first `limit`
        queries): what the parity gate replays."""
        out: dict[str, dict[str, None]] = {}  # a dict keeps each doc once, in order
        for query, doc in zip(self.queries, self.doc_ids, strict=True):
            if query in out or limit is None or len(out) < limit:
                out.setdefault(query, {})[doc] = None
        return {query: list(docs) for query, docs in out.items()}

    def narrowed(self, recall: Recall) -> FeatureMatrix:
        """The table as logging over the smaller candidate set `recall` would have written it:
        the candidates it lacks dropped (judged ones kept, outside it), first-pass ranks
        renumbered. Features do not depend on the candidate set, so the values are the same."""
        if self.recall is None or self.lists is None:
            raise InputError("the table records no candidate lists to narrow")
        if recall.bm25 > self.recall.bm25 or recall.knn > self.recall.knn:
            raise InputError(f"{recall.label} is not within {self.recall.label}, the candidate "
                             "set the table was logged over")
        inside = [(0 < b <= recall.bm25) or (0 < k <= recall.knn) for b, k in self.lists]
        rows = [i for i in range(len(self)) if inside[i] or self.judged[i]]
        order: dict[str, list[int]] = {}
        for i in rows:
            if inside[i]:
                order.setdefault(self.qids[i], []).append(i)
        ranks = dict.fromkeys(rows, 0)
        for members in order.values():  # BM25's docs in its order, then the nearest ones
            members.sort(key=lambda i: (0, self.lists[i][0]) if 0 < self.lists[i][0] <= recall.bm25
                         else (1, self.lists[i][1]))
            ranks.update({i: r for r, i in enumerate(members, 1)})
        narrow = self.take(rows)
        lists = tuple((b if b <= recall.bm25 else 0, k if k <= recall.knn else 0)
                      for b, k in narrow.lists)
        return replace(narrow, ranks=tuple(ranks[i] for i in rows), recall=recall, lists=lists)

    def take(self, rows: Sequence[int]) -> FeatureMatrix:
        """The matrix restricted to `rows` (in the order given)."""
        rows = list(rows)

        def pick(column: tuple | None) -> tuple | None:
            return None if column is None else tuple(column[i] for i in rows)

        return FeatureMatrix(self.feature_set, self.feature_names, pick(self.qids),
                             pick(self.queries), pick(self.doc_ids), pick(self.grades),
                             self.values[rows], pick(self.ranks), pick(self.judged),
                             self.shoppers, self.cross_encoder, self.encoder, self.recall,
                             pick(self.lists))


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


def write_table(matrix: FeatureMatrix, path: Path, *, judgments_source: str | None = None
                ) -> None:
    """Parquet: qid, query, doc_id, grade, [first_pass_rank, judged, bm25_rank, knn_rank], then
    one float32 column per feature (NaN kept).

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
    if matrix.lists is not None:
        columns["bm25_rank"] = pa.array([b for b, _ in matrix.lists], pa.int32())
        columns["knn_rank"] = pa.array([k for _, k in matrix.lists], pa.int32())
    for i, name in enumerate(matrix.feature_names):
        columns[name] = pa.array(matrix.values[:, i], pa.float32())
    meta = {"feature_set": matrix.feature_set, "feature_names": list(matrix.feature_names),
            "judgments": judgments_source, "missing": "NaN: the plugin logged no value",
            "recall": matrix.recall.to_dict() if matrix.recall else None,
            "shoppers": matrix.shoppers,
            "cross_encoder": matrix.cross_encoder, "encoder": matrix.encoder,
            "first_pass_rank": (f"place among the query's candidates ({matrix.recall.label}: "
                                "the BM25 list, then the nearest products it lacks); 0: a "
                                "judged doc outside them; unjudged candidates have grade 0, "
                                "judged false; bm25_rank, knn_rank: the doc's rank in each "
                                "list, 0: not in it") if matrix.recall else None}
    table = pa.table(columns).replace_schema_metadata({"esrank": json.dumps(meta)})
    with new_file(path) as tmp:
        pq.write_table(table, tmp)


PART = "part-{:05d}.parquet"


def write_part(matrix: FeatureMatrix, dataset: Path, number: int, *,
               judgments_source: str | None = None) -> Path:
    """Write `matrix` (whole query groups) as part `number` of the dataset folder `dataset`;
    atomic, so a part on disk is always complete."""
    dataset.mkdir(parents=True, exist_ok=True)
    path = dataset / PART.format(number)
    write_table(matrix, path, judgments_source=judgments_source)
    return path


def table_parts(path: Path) -> list[Path]:
    """The files of a table: the file itself, or a dataset's parts in order."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    parts = sorted(path.glob("part-*.parquet"))
    if not parts:
        raise InputError("a table folder holds no part-*.parquet files", source=str(path))
    return parts


def read_table(path: Path) -> FeatureMatrix:
    """Read a table written by `write_table`, or a dataset of parts (`write_part`), whose parts
    must all name the same feature set and features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = table_parts(path)
    tables = [pq.read_table(part) for part in parts]
    metas = [(t.schema.metadata or {}).get(b"esrank") for t in tables]
    for part, raw in zip(parts, metas, strict=True):
        if raw is None:
            raise InputError("not an esrank training table (no esrank metadata)",
                             source=str(part))
    meta = json.loads(metas[0])
    for part, raw in zip(parts[1:], metas[1:], strict=True):
        other = json.loads(raw)
        if (other["feature_set"], other["feature_names"]) != (meta["feature_set"],
                                                               meta["feature_names"]):
            raise InputError(f"logged with {other['feature_set']}, not {meta['feature_set']} "
                             f"as {parts[0].name} is", source=str(part))
        if other.get("shoppers"):  # each part names the shoppers of its own queries
            meta["shoppers"] = {**(meta.get("shoppers") or {}), **other["shoppers"]}
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) \
        if len(tables) > 1 else tables[0]
    names = tuple(meta["feature_names"])
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise InputError(f"columns {missing} named in the metadata are absent", source=str(path))
    values = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]
                             ).astype(np.float32) if names else np.zeros((table.num_rows, 0))
    ranked = "first_pass_rank" in table.column_names
    listed = "bm25_rank" in table.column_names
    # a table from before the recall stage names its BM25 window
    recall = (Recall.from_dict(meta["recall"]) if meta.get("recall")
              else Recall(meta["window"]) if meta.get("window") else None)
    return FeatureMatrix(meta["feature_set"], names,
                         tuple(table.column("qid").to_pylist()),
                         tuple(table.column("query").to_pylist()),
                         tuple(table.column("doc_id").to_pylist()),
                         tuple(int(g) for g in table.column("grade").to_pylist()), values,
                         tuple(table.column("first_pass_rank").to_pylist()) if ranked else None,
                         tuple(table.column("judged").to_pylist()) if ranked else None,
                         meta.get("shoppers"), meta.get("cross_encoder"), meta.get("encoder"),
                         recall, tuple(zip(table.column("bm25_rank").to_pylist(),
                                           table.column("knn_rank").to_pylist(), strict=True))
                         if listed else None)
