"""What esrank writes appears whole or not at all.

A file is written under a unique temporary name beside its target and renamed over it
(`os.replace`, atomic on one filesystem), so a crash, a full disk or two writers never leave a
half-written table, report or model where a reader would pick it up. Artifact folders are
built in a temporary folder and renamed into place; an existing artifact is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from esrank.core.errors import InputError


@contextmanager
def new_file(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; it replaces `path` on success and
    is removed on failure.

    >>> with new_file(Path("table.parquet")) as tmp:   # doctest: +SKIP
    ...     pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_file(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with new_file(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def new_folder(path: Path) -> Iterator[Path]:
    """A temporary folder to build the new folder `path` in, renamed into place on success.
    An existing, non-empty `path` is refused: what was written there (a model some registry
    may serve) is never replaced."""
    path = Path(path)
    check_new_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            path.rmdir()  # the empty folder the caller made for it
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_new_folder(path: Path) -> None:
    """Refuse a `path` that holds something (see new_folder), before any work is done."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError("already exists and is not empty: artifacts are never overwritten "
                         "(one may be deployed); choose a new folder", source=str(path))
