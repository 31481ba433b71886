"""What every bench does last: write its figures as JSON and print them."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result)) + 2
    for key, value in result.items():
        print(f"{key:{width}} {value}")
