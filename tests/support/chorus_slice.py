"""The 301-product Chorus test slice and the Chorus judgments restricted to it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "tests" / "data" / "chorus_slice.jsonl"
JUDGMENTS = ROOT / "esrank" / "data" / "chorus" / "judgments.csv"


def write_slice_judgments(path: Path) -> Path:
    """Write the Chorus judgments of the slice's products to `path` (CSV) and return it."""
    ids = {json.loads(line)["id"] for line in SLICE.read_text().splitlines()}
    with JUDGMENTS.open() as src, path.open("w") as out:
        writer = csv.DictWriter(out, ["query", "docid", "rating"])
        writer.writeheader()
        writer.writerows(r for r in csv.DictReader(src) if r["docid"] in ids)
    return path
