"""The LLM judge calibrated against people: Chorus pairs graded by three human raters.

A seeded sample of --queries queries from judgments_individual_raters.csv (each pair with the
product name and description the raters saw) is graded by each --prompts prompt through the
local judge (esrank.judgments.llm_judge.LocalBackend over the packaged GGUF model), and by the
obvious cheap
alternative, the encoder's cosine between query and product text. Half of the queries fit an
isotonic calibration (score -> consensus grade); on the other half each judge is compared,
raw and calibrated, with every rater and with the consensus (weighted kappa, kappa, Spearman
of the score, per-query Spearman), next to the raters' agreement with each other, plus the
calibrated grade's confusion matrix against the consensus (drawn as an SVG for the docs).
Writes bench/results/llm_judge.json and docs/images/llm-judge-confusion.svg.

    python bench/llm_judge.py [--queries 30] [--prompts grade yesno]
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import numpy as np
from _chorus import CHORUS
from _report import configured_encoder, write_result
from scipy.stats import spearmanr

from esrank.judgments.agreement import pair_stats
from esrank.judgments.llm_judge import PROMPTS, Calibration, LocalBackend, judge
from esrank.models.llm import DEFAULT_LLM, load_llm

ROOT = Path(__file__).resolve().parent.parent
RATERS = CHORUS / "judgments_individual_raters.csv"
SVG = ROOT / "docs" / "images" / "llm-judge-confusion.svg"
HUMANS = ("agent_1_rating", "agent_2_rating", "agent_3_rating", "final_rating")


def per_query_spearman(queries, scores, grades) -> float:
    """Mean over queries (with varied grades) of Spearman(score, grade): ranking quality."""
    out = []
    for q in dict.fromkeys(queries):
        i = [k for k, x in enumerate(queries) if x == q]
        s, g = np.asarray(scores)[i], np.asarray(grades)[i]
        if len(set(g)) > 1 and len(set(s)) > 1:
            out.append(spearmanr(s, g).statistic)
    return round(float(np.mean(out)), 4) if out else float("nan")


def agreement_row(grades, scores, rows, queries) -> dict:
    """A judge's grades (and scores) against each rater and the consensus."""
    row = {}
    for h in HUMANS:
        human = [int(r[h]) for r in rows]
        st = pair_stats(list(grades), human)
        row[h] = {"weighted_kappa": round(st["weighted_kappa"], 4),
                  "kappa": round(st["kappa"], 4), "exact": round(st["exact"], 4),
                  "spearman_score": round(float(spearmanr(scores, human).statistic), 4)}
    row["per_query_spearman_vs_consensus"] = per_query_spearman(
        queries, scores, [int(r["final_rating"]) for r in rows])
    return row


def confusion(pred, truth) -> list[list[int]]:
    m = np.zeros((4, 4), dtype=int)
    np.add.at(m, (np.asarray(truth), np.clip(np.asarray(pred), 0, 3)), 1)
    return m.tolist()


def svg_matrices(panels: dict[str, list[list[int]]]) -> str:
    """Confusion matrices side by side (rows: consensus grade, columns: judge's grade)."""
    cell, pad, top = 44, 70, 56
    width = len(panels) * (4 * cell + pad) + pad
    height = top + 4 * cell + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             ' font-family="sans-serif" font-size="13">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for k, (title, m) in enumerate(panels.items()):
        x0 = pad + k * (4 * cell + pad)
        peak = max(max(r) for r in m) or 1
        parts.append(f'<text x="{x0}" y="20" font-weight="bold">{title}</text>')
        parts.append(f'<text x="{x0}" y="{top - 8}" font-size="11">judge grade 0 1 2 3 →</text>')
        for i in range(4):
            parts.append(f'<text x="{x0 - 18}" y="{top + i * cell + 27}">{i}</text>')
            for j in range(4):
                shade = int(255 - 200 * m[i][j] / peak)
                parts.append(f'<rect x="{x0 + j * cell}" y="{top + i * cell}" width="{cell}" '
                             f'height="{cell}" fill="rgb({shade},{shade},255)" stroke="#888"/>')
                parts.append(f'<text x="{x0 + j * cell + cell / 2}" y="{top + i * cell + 27}" '
                             f'text-anchor="middle">{m[i][j]}</text>')
        parts.append(f'<text x="{x0}" y="{top + 4 * cell + 20}" font-size="11">'
                     'rows: human consensus grade</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--prompts", nargs="+", default=["grade", "yesno"], choices=sorted(PROMPTS))
    ap.add_argument("--model", default=DEFAULT_LLM)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "llm_judge.json")
    args = ap.parse_args()

    with open(RATERS, newline="", encoding="utf-8") as f:
        all_rows = list(csv.DictReader(f))
    queries = sorted({r["query"] for r in all_rows})
    random.Random(args.seed).shuffle(queries)
    chosen = queries[:args.queries]
    calib_q, test_q = set(chosen[::2]), set(chosen[1::2])
    rows = [r for r in all_rows if r["query"] in set(chosen)]
    rows.sort(key=lambda r: chosen.index(r["query"]))  # a query's pairs together
    texts = [f"{r['name']}. {r['description']}" if r["description"] != r["name"] else r["name"]
             for r in rows]
    cal = [i for i, r in enumerate(rows) if r["query"] in calib_q]
    test = [i for i, r in enumerate(rows) if r["query"] in test_q]
    test_rows = [rows[i] for i in test]
    test_queries = [r["query"] for r in test_rows]
    consensus = np.array([int(r["final_rating"]) for r in rows])

    raters = {}
    for a in range(3):
        for b in range(a + 1, 3):
            ha, hb = HUMANS[a], HUMANS[b]
            st = pair_stats([int(r[ha]) for r in test_rows], [int(r[hb]) for r in test_rows])
            raters[f"{ha} vs {hb}"] = {k: round(st[k], 4)
                                      for k in ("weighted_kappa", "kappa", "exact", "spearman")}

    started = time.monotonic()
    lm = load_llm(args.model)
    load_s = time.monotonic() - started
    backend = LocalBackend(lm)
    judges, panels, timing = {}, {}, {}
    for name in args.prompts:
        prompt = PROMPTS[name]
        t = time.monotonic()
        pairs = [(r["query"], r["docid"], text) for r, text in zip(rows, texts, strict=True)]
        graded = list(judge(pairs, backend, prompt))
        timing[name] = round((time.monotonic() - t) / len(rows), 3)
        print(f"{name}: {len(graded)} pairs, {timing[name]} s/pair", flush=True)
        scores = np.array([g.score for g in graded])
        judges[f"llm:{name}"] = (np.array([g.grade for g in graded]), scores, prompt.id)

    encoder = configured_encoder()
    t = time.monotonic()
    qv = encoder.encode([r["query"] for r in rows])
    dv = encoder.encode(texts)
    cosine = np.sum(qv * dv, axis=1)
    timing["cosine"] = round((time.monotonic() - t) / len(rows), 4)
    judges["cosine"] = (None, cosine, encoder.name)

    results = {}
    for name, (raw, scores, ident) in judges.items():
        calibration = Calibration.fit(scores[cal], consensus[cal], prompt=ident,
                                      model=lm.name if name.startswith("llm") else encoder.name,
                                      fitted_on=f"{len(calib_q)} Chorus queries")
        calibrated = np.array([calibration.grade(s) for s in scores[test]])
        entry = {"id": ident, "calibrated": agreement_row(calibrated, scores[test], test_rows,
                                                          test_queries),
                 "calibration": {"knots": len(calibration.thresholds)},
                 "confusion_calibrated_vs_consensus": confusion(calibrated, consensus[test])}
        if raw is not None:
            entry["raw"] = agreement_row(raw[test], scores[test], test_rows, test_queries)
            entry["confusion_raw_vs_consensus"] = confusion(raw[test], consensus[test])
            panels[f"{name} raw"] = entry["confusion_raw_vs_consensus"]
        panels[f"{name} calibrated"] = entry["confusion_calibrated_vs_consensus"]
        results[name] = entry

    SVG.write_text(svg_matrices(panels))
    summary = {
        "pairs": len(rows), "queries": len(chosen), "calibration_pairs": len(cal),
        "test_pairs": len(test), "model": lm.name, "model_version": lm.version,
        "model_load_s": round(load_s, 1), "seconds_per_pair": timing,
        "consensus_grade_counts_test": np.bincount(consensus[test], minlength=4).tolist(),
        "raters_vs_each_other": raters,
        "judges": results,
        "headline": {name: {"weighted_kappa_vs_consensus":
                            r["calibrated"]["final_rating"]["weighted_kappa"],
                            "spearman_vs_consensus":
                            r["calibrated"]["final_rating"]["spearman_score"],
                            "per_query_spearman":
                            r["calibrated"]["per_query_spearman_vs_consensus"]}
                     for name, r in results.items()},
        "plot": str(SVG.relative_to(ROOT)),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_result(summary, args.out)


if __name__ == "__main__":
    main()
