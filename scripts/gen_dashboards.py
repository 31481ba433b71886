"""Write the saved-object ndjson files shipped in esrank/evaluation/saved_objects/ (a test checks
drift)."""

from __future__ import annotations

from esrank.evaluation.dashboards import FILES, saved_objects, to_ndjson

if __name__ == "__main__":
    for flavor, path in FILES.items():
        path.write_text(to_ndjson(saved_objects(flavor)))
        print(f"wrote {path}")
