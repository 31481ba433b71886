"""What every bench does last: write its figures as JSON and print them; and the pieces
several benches share."""

from __future__ import annotations

import json
from pathlib import Path

from esrank import app


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result)) + 2
    for key, value in result.items():
        print(f"{key:{width}} {value}")


def paired(report) -> dict:
    """A Comparison (esrank.judgments.metrics.compare) as a bench reports it, per metric."""
    return {m.metric: {"delta": round(m.delta, 4), "p_randomization": round(m.p_randomization, 4),
                       "wins/ties/losses": f"{m.wins}/{m.ties}/{m.losses}"}
            for m in report.metrics}


def single_feature_runs(table) -> dict[str, dict[str, list[str]]]:
    """feature -> query -> its served window reordered by that feature alone (an unmatched
    feature sorts last; ties keep the first pass's order)."""
    import numpy as np

    from esrank.learn.served import served_runs

    rows = np.arange(len(table))
    return {name: served_runs(table, rows, np.nan_to_num(table.values[:, i], nan=-np.inf))
            for i, name in enumerate(table.feature_names)}


def engine_options(ap) -> None:
    """--flavor and --url: which local engine (or cluster) a bench runs on."""
    ap.add_argument("--flavor", choices=["opensearch", "elasticsearch"], default="opensearch",
                    help="The engine (default opensearch); results go to NAME_elasticsearch.json "
                         "for Elasticsearch.")
    ap.add_argument("--url", help="Default: the local node of --flavor (9200 / 9201).")


def connect_engine(args):
    """The engine the bench's --flavor/--url name."""
    from esrank.core.settings import load_settings

    return app.connect_engine(load_settings(url=args.url, flavor=args.flavor))


def configured_encoder():
    """The encoder esrank's commands use (ESRANK_ENCODER__*: on a CPU, ONNX Runtime int8)."""
    from esrank.core.settings import load_settings

    return app.load_encoder(load_settings())


def result_path(name: str, args) -> Path:
    """bench/results/NAME.json, or NAME_elasticsearch.json on Elasticsearch."""
    suffix = "" if args.flavor == "opensearch" else f"_{args.flavor}"
    return Path(__file__).resolve().parent / "results" / f"{name}{suffix}.json"
