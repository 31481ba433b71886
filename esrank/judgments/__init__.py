"""Judgments: graded (query, doc) lists, where they come from (people, clicks, the LLM judge),
how far two sources agree, and the metrics that score a ranking against them.

- lists: Judgment, JudgmentList and their file formats
- clicks: sessions from UBI and click models (COEC, SDBN)
- agreement: Cohen's kappa and pair statistics between two lists
- llm_judge: grading pairs with an LLM, calibrated against people
- metrics: Evaluator (NDCG, condensed, MRR, ERR) bound to a judgment list
"""

from __future__ import annotations

from esrank.judgments.lists import Judgment, JudgmentList, read_judgments, write_judgments
from esrank.judgments.metrics import METRICS, Evaluation, Evaluator

__all__ = [
    "Evaluation", "Evaluator", "Judgment", "JudgmentList", "METRICS", "read_judgments",
    "write_judgments",
]
