"""The query text esrank sends: at most MAX_QUERY_TERMS terms, the same when a query is
logged, evaluated and served."""

from __future__ import annotations

import re

# A match over F fields is F x terms clauses, and OpenSearch refuses a query of more than 1,024
# (too_many_nested_clauses): 64 terms leave room for feature templates over 16 fields.
MAX_QUERY_TERMS = 64
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"  # one term per character, as the engines split
_TERM = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")


def bounded_query(query: str) -> tuple[str, int]:
    """`query` cut after its first MAX_QUERY_TERMS terms (words, and CJK characters one by
    one, as the engines' standard analyzer splits them, or finer), and how many were cut.

    >>> bounded_query("tv " * 70)[1]
    6
    """
    terms = list(_TERM.finditer(query))
    if len(terms) <= MAX_QUERY_TERMS:
        return query, 0
    return query[:terms[MAX_QUERY_TERMS - 1].end()], len(terms) - MAX_QUERY_TERMS
