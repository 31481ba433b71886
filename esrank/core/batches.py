"""Fixed-size chunks of any iterable (every stage that talks to the engine in batches)."""

from __future__ import annotations

from collections.abc import Iterable


def batched(items: Iterable, size: int) -> Iterable[list]:
    """Yield lists of at most `size` items."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
