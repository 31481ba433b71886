"""UTC timestamps in the two forms esrank writes: ISO in documents and metadata
(2026-12-01T23:59:59Z), compact in ids and names (20261201T235959Z)."""

from __future__ import annotations

import time

ISO = "%Y-%m-%dT%H:%M:%SZ"
COMPACT = "%Y%m%dT%H%M%SZ"


def utc(fmt: str = ISO, at: float | None = None) -> str:
    """Now (or the epoch seconds `at`) in UTC, as `fmt`."""
    return time.strftime(fmt, time.gmtime(at))
