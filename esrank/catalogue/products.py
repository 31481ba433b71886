"""Product files (JSON arrays, JSONL, zips of those) -> checked records -> engine documents."""

from __future__ import annotations

import json
import logging
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from esrank.core.errors import InputError

log = logging.getLogger(__name__)


MAX_RECORD_BYTES = 1 << 20  # one product's JSON (the largest Chorus product: 16 KB)
MAX_ID_BYTES = 512  # the engines' limit on a document id (UTF-8)


@dataclass(frozen=True)
class RawProduct:
    """One product as read, with where it came from (file and record number), or why it
    could not be read."""

    source: str
    position: int
    data: object = None
    error: str | None = None


def read_products(paths: Iterable[Path]) -> Iterator[RawProduct]:
    """Yield products from .json (array), .jsonl/.ndjson, or .zip files holding those.

    JSONL is streamed line by line; a record over MAX_RECORD_BYTES is rejected unparsed. A file
    that cannot be read (not UTF-8, a corrupt zip) is an InputError naming it."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputError("no such file", source=str(path))
        if path.suffix != ".zip":
            with _reading(str(path)), path.open("rb") as f:
                yield from _parse(str(path), path.name, f)
            continue
        with _reading(str(path)), zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if member.endswith((".json", ".jsonl", ".ndjson")):
                    source = f"{path}!{member}"
                    with _reading(source), zf.open(member) as f:
                        yield from _parse(source, member, f)


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Turn a failure to read `source` into an InputError naming it."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise InputError(f"corrupt or truncated zip ({exc})", source=source) from exc
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror or exc})", source=source) from exc


def _parse(source: str, name: str, f: IO[bytes]) -> Iterator[RawProduct]:
    if name.endswith((".jsonl", ".ndjson")):
        for line_no, line in enumerate(f, 1):
            if len(line) > MAX_RECORD_BYTES:
                yield RawProduct(source, line_no, error=_too_large(len(line)))
            elif line.strip():
                try:
                    yield RawProduct(source, line_no, _load(line))
                except ValueError as exc:
                    yield RawProduct(source, line_no, error=exc.args[0])
        return
    try:
        data = _load(f.read())
    except ValueError as exc:
        raise InputError(exc.args[0], source=source, line=exc.args[1]) from exc
    if not isinstance(data, list):
        raise InputError("expected a JSON array of products", source=source)
    for i, item in enumerate(data, 1):
        size = len(json.dumps(item, ensure_ascii=False).encode())
        yield (RawProduct(source, i, item) if size <= MAX_RECORD_BYTES else
               RawProduct(source, i, error=_too_large(size)))


def _load(raw: bytes) -> object:
    """Parse UTF-8 JSON; ValueError(reason, line or None) when it is not that."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})", None) from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}", exc.lineno) from exc
    except RecursionError as exc:
        raise ValueError("invalid JSON: nested too deeply", None) from exc


def _too_large(size: int) -> str:
    return f"a record of {size:,} bytes; at most {MAX_RECORD_BYTES:,}"


def to_document(product: RawProduct) -> tuple[str, dict]:
    """Validate and shape one product; raises InputError naming the record and field."""
    p = product.data
    where = dict(source=product.source, line=product.position)
    if product.error is not None:
        raise InputError(product.error, **where)
    if not isinstance(p, dict):
        raise InputError(f"a product must be a JSON object, found {type(p).__name__}", **where)
    doc_id = p.get("id")
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or str(doc_id) == "":
        raise InputError("field 'id': missing or not a string/number", **where)
    if len(str(doc_id).encode()) > MAX_ID_BYTES:
        raise InputError(f"field 'id': {len(str(doc_id).encode())} bytes; the engines take at "
                         f"most {MAX_ID_BYTES}", **where)
    title = p.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InputError(f"product {doc_id}: field 'title': missing or empty", **where)
    price = p.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
        raise InputError(f"product {doc_id}: field 'price': expected a number (cents), "
                         f"found {price!r}", **where)
    released = p.get("date_released")
    if released is not None:
        try:
            datetime.fromisoformat(str(released).replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError(f"product {doc_id}: field 'date_released': not an ISO date "
                             f"({released!r})", **where) from exc
    attributes = [str(v) for k, v in sorted(p.items()) if k.startswith("attr_t_") and v]
    doc = {
        "id": str(doc_id),
        "title": title,
        "name": p.get("name"),
        "short_description": p.get("short_description"),
        "supplier": p.get("supplier"),
        "ean": p.get("ean"),
        "price": None if price is None else price / 100.0,
        "date_released": released,
        "image": p.get("img_thumb"),
        "attributes": " | ".join(attributes) or None,
        "attrs": {k: v for k, v in p.items() if k.startswith("attr_")},
    }
    return str(doc_id), doc


def text_of(doc: dict) -> str:
    """What `text_vector` embeds: the title, then the short description when there is one."""
    description = doc.get("short_description")
    return f"{doc['title']}. {description}" if description else doc["title"]
