"""The behaviour log (User Behavior Insights): searches and the clicks, carts and purchases
that followed them.

- log: UbiQuery and UbiEvent records, read from NDJSON
- indices: the ubi_queries and ubi_events indices, written and read back
"""

from __future__ import annotations

from esrank.ubi.indices import fetch, store
from esrank.ubi.log import UbiEvent, UbiQuery, read_ndjson

__all__ = [
    "UbiEvent", "UbiQuery", "fetch", "read_ndjson", "store",
]
