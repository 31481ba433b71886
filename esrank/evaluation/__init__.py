"""Evaluation: configurations measured against judgments, compared, stored, reported.

- significance: paired comparison of two configurations
- rank_eval: the engine's own _rank_eval as a cross-check
- runs: the evaluation runs store in the engine
- comparison: side by side, per-query deltas, the static comparison page
- report: the HTML report (gains, latency, window curve)
- dashboards: the Kibana / OpenSearch Dashboards saved objects
"""

from __future__ import annotations

from esrank.evaluation.report import build_report
from esrank.evaluation.runs import push_comparison, push_evaluation, run_history
from esrank.evaluation.significance import Comparison, compare

__all__ = [
    "Comparison", "build_report", "compare", "push_comparison", "push_evaluation",
    "run_history",
]
