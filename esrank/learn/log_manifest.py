"""A logged dataset's manifest: what its parts were logged with, and which parts are done.

`esrank log` into a folder writes the table in parts of `part_size` query groups (in judgment
order), each part file written whole (atomically), then recorded in `_esrank.json`. A re-run
with the same inputs skips the recorded parts whose files are on disk; one with other inputs is
refused, naming what differs, since its parts would not make one table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from esrank.core.errors import InputError
from esrank.core.files import write_file
from esrank.judgments.lists import JudgmentList
from esrank.learn.table import PART

MANIFEST = "_esrank.json"
# the fields a resumed run must share with the folder, as messages name them
_NAMES = {"feature_set": "feature set", "candidates": "candidate set",
          "judgments_sha256": "judgments", "encoder": "encoder", "cross_encoder": "cross-encoder",
          "part_size": "part size"}


def judgments_digest(judgments: JudgmentList, shoppers: Mapping[str, dict] | None = None) -> str:
    """sha256 of the judgments as read (qid, query, doc, grade, in order) and of the shopper
    params they are logged with: equal digests, equal query groups and parts."""
    digest = hashlib.sha256()
    for j in judgments:
        digest.update(f"{j.qid}\t{j.query}\t{j.doc_id}\t{j.grade}\n".encode())
    digest.update(json.dumps(shoppers or {}, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class PartRecord:
    """One finished part: its query groups, judged pairs, rows and the judged docs the index
    lacked (query, doc id)."""

    queries: int
    judgments: int
    rows: int
    missing: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LogManifest:
    """What a dataset folder is logged with. `judgments` (where they came from) is shown, not
    compared: the digest is."""

    feature_set: str
    candidates: str | None
    judgments_sha256: str
    encoder: str | None
    cross_encoder: str | None
    part_size: int
    judgments: str | None = field(default=None, compare=False)

    def open(self, folder: Path) -> dict[int, PartRecord]:
        """The parts of `folder` already logged with these inputs (part number -> record);
        refuses a folder logged with other ones, or holding parts of no esrank log. A new
        folder gets the manifest."""
        path = Path(folder) / MANIFEST
        if not path.exists():
            if any(Path(folder).glob("part-*.parquet")):
                raise InputError(f"the folder holds part files but no {MANIFEST}: not one "
                                 "`esrank log` can resume; log into a new folder",
                                 source=str(folder))
            self.save(folder, {})
            return {}
        data = json.loads(path.read_text())
        logged = data.get("logged_with", {})
        differ = [f"{name} ({logged.get(key)} there, {getattr(self, key)} now)"
                  for key, name in _NAMES.items() if logged.get(key) != getattr(self, key)]
        if differ:
            raise InputError(f"the folder was logged with another {'; another '.join(differ)}:"
                             " log into a new folder, or remove this one to start over",
                             source=str(folder))
        return {int(n): PartRecord(r["queries"], r["judgments"], r["rows"],
                                   tuple(tuple(m) for m in r["missing"]))
                for n, r in data.get("parts", {}).items()
                if (Path(folder) / PART.format(int(n))).exists()}

    def save(self, folder: Path, parts: Mapping[int, PartRecord]) -> None:
        """Write the manifest with the finished `parts` (atomically)."""
        data = {"logged_with": asdict(self),
                "parts": {str(n): asdict(parts[n]) for n in sorted(parts)}}
        write_file(Path(folder) / MANIFEST, json.dumps(data, indent=1) + "\n")
