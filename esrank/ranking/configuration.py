"""Configuration names, the one grammar: NAME[+rerankN][+mmrL][+capN], the stages after the
model in the order they run.

- NAME: "bm25", "bm25-title", a fused baseline, "active" or a deployed model's name;
- +rerankN: the cross-encoder reranks the top N (1..100);
- +mmrL: MMR re-ordering over the product vectors with λ = L in (0, 1], at most three
  decimals (esrank.ranking.diversity);
- +capN: at most N products per brand on the page (1..100).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from esrank.core.errors import InputError
from esrank.ranking.diversity import Diversity

MAX_RERANK = 100  # the most hits a cross-encoder reranks
TOP = r"[1-9][0-9]?|100"  # N of +rerankN and +capN: ASCII digits, 1..100
LAMBDA = r"0?\.(?=[0-9]{0,2}[1-9])[0-9]{1,3}|1(?:\.0{1,3})?"  # L of +mmrL: (0, 1], 3 decimals
STAGES = (("rerank", TOP), ("mmr", LAMBDA), ("cap", TOP))  # in the order they run
MARKER = re.compile(r"\+(?=(?:rerank|mmr|cap))")  # where a stage's part of a name starts
FORM = "NAME+rerankN+mmrL+capN (each part optional, in this order)"


@dataclass(frozen=True)
class Configuration:
    """A configuration name's parts: the ranking's name, the rerank stage's N (0: none), the
    diversity stage's knobs.

    >>> Configuration("active", 20, Diversity(cap=2)).label
    'active+rerank20+cap2'
    """

    name: str
    rerank: int = 0
    diversity: Diversity = field(default_factory=Diversity)

    @property
    def label(self) -> str:
        """The name it parses from (λ written shortest: "+mmr.70" is "+mmr0.7")."""
        return (self.name + (f"+rerank{self.rerank}" if self.rerank else "")
                + self.diversity.suffix)


def parse_configuration(which: str) -> Configuration:
    """A configuration name's parts; an InputError naming the part that is not the grammar.

    >>> parse_configuration("active+rerank20+mmr0.7+cap2")
    Configuration(name='active', rerank=20, diversity=Diversity(cap=2, mmr=0.7))
    >>> parse_configuration("bm25").rerank
    0
    """
    name, *parts = MARKER.split(which)
    values: dict[str, str] = {}
    order = [stage for stage, _ in STAGES]
    for part in parts:
        stage = next(s for s in order if part.startswith(s))
        value = part[len(stage):]
        pattern = dict(STAGES)[stage]
        if not re.fullmatch(pattern, value):
            raise InputError(f"{which[:60]!r}: +{part[:20]} is not {_wanted(stage)}; write "
                             f"{FORM}, e.g. active+rerank20+mmr0.7+cap2")
        if stage in values:
            raise InputError(f"{which[:60]!r}: +{stage} comes twice; write {FORM}")
        if any(order.index(s) > order.index(stage) for s in values):
            raise InputError(f"{which[:60]!r}: +{part[:20]} is out of place; write {FORM}")
        values[stage] = value
    mmr = values.get("mmr")
    return Configuration(name, int(values.get("rerank", 0)),
                         Diversity(int(values.get("cap", 0)),
                                   float(mmr) if mmr is not None else None))


def _wanted(stage: str) -> str:
    return {"rerank": f"+rerankN with N in 1..{MAX_RERANK}",
            "mmr": "+mmrL with L in (0, 1] (at most 3 decimals, e.g. 0.7)",
            "cap": "+capN with N in 1..100"}[stage]
