"""What POST /events accepts: a known action on a doc that a search this deployment served
showed. Everything else is refused per event, never stored as training signal.

- the action is one the click models, signals and profiles weigh (ACTIONS); `impression` is
  refused, the sidecar writes its own when /search serves a page;
- the query_id is a search served by a sidecar of this deployment: found in this process's
  memory (`ServedQueries`: the last searches, SERVED_DOCS doc ids in all, which covers the
  UBI writer's 0.5 s before a query reaches the engine), else in the engine's `ubi_queries`
  (any sidecar behind a load balancer; a purchase days later), looked up once per request;
  with the model that served it (what the per-model metrics count the event under);
- the doc_id is among the docs that search showed.

The bearer token still decides who may post. Verification stops events on products a search
never showed; it cannot stop a client that reports actions on what it was shown.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from esrank.judgments.clicks import ACTION_WEIGHTS
from esrank.ubi.log import UNKNOWN_MODEL, UbiEvent, UbiQuery

ACTIONS = tuple(ACTION_WEIGHTS)  # click, add_to_cart, purchase
# doc ids remembered (about 9 MB): 10,000 pages of 10, 1,000 of 100; far more than a
# sidecar serves in the UBI writer's 0.5 s before a query reaches the engine
SERVED_DOCS = 100_000


@dataclass(frozen=True)
class Rejected:
    """An event /events refused: its index in the request and why."""

    index: int
    reason: str

    def to_dict(self) -> dict:
        return {"index": self.index, "reason": self.reason}


class ServedQueries:
    """Query id -> the doc ids its page showed, the model that served it and the actions
    counted on it (`mark`), for the searches used last, up to `max_docs` doc ids in all (least
    recently used forgotten first); shared by the request threads."""

    def __init__(self, max_docs: int = SERVED_DOCS):
        self._max_docs, self._docs = max_docs, 0
        self._shown: OrderedDict[str, tuple[tuple[str, ...], str, set[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, query_id: str, doc_ids: Iterable[str], model: str = UNKNOWN_MODEL) -> None:
        docs = tuple(doc_ids)
        with self._lock:
            self._docs += len(docs) - len(self._shown.pop(query_id, ((),))[0])
            self._shown[query_id] = (docs, model, set())
            while self._docs > self._max_docs and len(self._shown) > 1:
                self._docs -= len(self._shown.popitem(last=False)[1][0])

    def get(self, query_id: str) -> tuple[str, ...] | None:
        with self._lock:
            found = self._shown.get(query_id)
            if found is not None:
                self._shown.move_to_end(query_id)
            return found[0] if found is not None else None

    def mark(self, query_id: str, action: str) -> str | None:
        """The model that served `query_id` the first time `action` is marked on it; None
        after (a search counts once per action) or for a query not held.

        >>> served = ServedQueries()
        >>> served.add("q1", ["d1"], "chorus-v7")
        >>> served.mark("q1", "click"), served.mark("q1", "click")
        ('chorus-v7', None)
        """
        with self._lock:
            found = self._shown.get(query_id)
            if found is None or action in found[2]:
                return None
            found[2].add(action)
            return found[1]


def verify(events: Sequence[UbiEvent], served: ServedQueries,
           lookup: Callable[[list[str]], Mapping[str, UbiQuery]]
           ) -> tuple[list[UbiEvent], list[Rejected]]:
    """The events to store, and those refused (by index, with the reason). `lookup` gives the
    UBI queries of the query ids `served` does not hold, for the whole request in one call
    (the engine's ubi_queries: `esrank.ubi.indices.queries_by_id`); what it finds is
    remembered, with the model that served it.

    >>> served = ServedQueries()
    >>> served.add("q1", ["d1", "d2"])
    >>> ok, refused = verify([UbiEvent("click", "q1", "d2"), UbiEvent("click", "q1", "d9")],
    ...                      served, lambda ids: {})
    >>> len(ok), refused[0].reason
    (1, "doc_id 'd9' is not among the 2 results query 'q1' showed")
    """
    reasons: dict[int, str] = {}
    for i, e in enumerate(events):
        if e.action == "impression":
            reasons[i] = ("action 'impression' is refused: the sidecar records the impressions "
                          "of each page /search serves")
        elif e.action not in ACTIONS:
            reasons[i] = f"action {e.action!r} is not one of {', '.join(ACTIONS)}"
    wanted = [e.query_id for i, e in enumerate(events) if i not in reasons]
    shown = {qid: docs for qid in wanted if (docs := served.get(qid)) is not None}
    unknown = list(dict.fromkeys(q for q in wanted if q not in shown))
    if unknown:
        for qid, query in lookup(unknown).items():
            served.add(qid, query.hit_ids, query.model)
            shown[qid] = query.hit_ids
    accepted = []
    for i, e in enumerate(events):
        if i in reasons:
            continue
        docs = shown.get(e.query_id)
        if docs is None:
            reasons[i] = (f"query_id {e.query_id!r} is not a search this sidecar served (not "
                          "among its recent searches, not in ubi_queries)")
        elif e.doc_id not in docs:
            reasons[i] = (f"doc_id {e.doc_id!r} is not among the {len(docs)} results query "
                          f"{e.query_id!r} showed")
        else:
            accepted.append(e)
    return accepted, [Rejected(i, reasons[i]) for i in sorted(reasons)]
