"""UTC timestamps in the forms esrank writes: ISO in documents and metadata
(2026-12-01T23:59:59Z; with milliseconds where records a second apart must keep their order),
compact in ids and names (20261201T235959Z), digits only in index
names (20261201235959: index names must be lowercase)."""

from __future__ import annotations

import time

ISO = "%Y-%m-%dT%H:%M:%SZ"
COMPACT = "%Y%m%dT%H%M%SZ"
DIGITS = "%Y%m%d%H%M%S"


def utc(fmt: str = ISO, at: float | None = None) -> str:
    """Now (or the epoch seconds `at`) in UTC, as `fmt`."""
    return time.strftime(fmt, time.gmtime(at))


def utc_ms(at: float | None = None) -> str:
    """Now (or `at`) in UTC as ISO with milliseconds: 2026-12-01T23:59:59.123Z."""
    at = time.time() if at is None else at
    return f"{utc(ISO[:-1], at)}.{int(at % 1 * 1000):03d}Z"
