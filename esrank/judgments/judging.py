"""A judging run: (query, doc id, product text) pairs graded by an LLM judge into a machine
grades file, with the report of what was graded, by which model, and what could not be.

The CLI (`esrank judgments llm`), the demo and a bench use the same run:

>>> report = judge_into(todo, [], lambda: backend, Path("grades.csv"))  # doctest: +SKIP
>>> report.graded                                                      # doctest: +SKIP
20
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import InputError
from esrank.judgments.llm_judge import PROMPTS, Backend, Calibration, Prompt, judge, write_grades


@dataclass(frozen=True)
class JudgingReport:
    """What a judging run wrote: `graded` pairs into `output`, by `model` at `model_version`
    with prompt `prompt` (and calibration `calibration`); `not_in_index` lists the doc ids
    that had no product to show the judge."""

    graded: int
    output: Path
    model: str
    model_version: str
    prompt: str
    calibration: str | None
    not_in_index: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"graded": self.graded, "output": str(self.output), "model": self.model,
                "model_version": self.model_version, "prompt": self.prompt,
                "calibration": self.calibration, "not_in_index": list(self.not_in_index)}


def judge_into(todo: Sequence[tuple[str, str, str]], missing: Sequence[str],
               backend: Callable[[], Backend], output: Path, *, prompt: Prompt = PROMPTS["grade"],
               calibration: Calibration | None = None, limit: int | None = None,
               workers: int = 1, progress: bool = False, index: str = "the index"
               ) -> JudgingReport:
    """Grade the first `limit` of `todo` (query, doc id, product text) with the judge that
    `backend()` builds (after the check below: a local model takes seconds to
    load) and write the grades to `output`. `missing` are the wanted doc ids `index` lacks:
    when nothing else was wanted the run is refused (InputError naming a few), since a wrong
    index is the likely cause."""
    from tqdm import tqdm

    if missing and not todo:
        raise InputError(f"none of the {len(missing)} products to judge is in index "
                         f"{index} (e.g. {', '.join(missing[:3])}): is ESRANK_INDEX right?")
    todo = list(todo)[:limit]
    judge_with = backend()
    graded = tqdm(judge(todo, judge_with, prompt, calibration, workers=workers),
                  total=len(todo), desc="judging", unit="pair", disable=not progress)
    n = write_grades(graded, output)
    return JudgingReport(n, output, judge_with.model, judge_with.version, prompt.id,
                         calibration.id if calibration else None, tuple(missing))
