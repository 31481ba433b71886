"""LLM judgments: (query, product) pairs graded 0..3 by a language model, each grade with its
provenance, and their calibration against people.

A judge asks one question per pair and reads the probabilities of the answer labels at the
first token of the reply (a prompt's `answers`: label -> grade value). `score` is the
expected grade under them; `grade` is the most likely label's, or the calibration's mapping of
the score onto the human scale. Two backends behind one interface:

* `OpenAIBackend`: any OpenAI-compatible chat/completions endpoint (vLLM, TGI, a hosted API),
  reading `logprobs`/`top_logprobs` (or, without them, the reply's first label);
* `LocalBackend`: a GGUF model from a package run by `esrank.models.llm` (offline, for tests).

>>> backend = LocalBackend(load_llm())                                  # doctest: +SKIP
>>> next(judge([("usb cable", "42", "Belkin USB cable, 3 m")], backend)).grade  # doctest: +SKIP
3
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from esrank.catalogue.lookup import fetch_texts
from esrank.core.auth import Auth, redact, split_credentials
from esrank.core.errors import ConfigError, EsrankError, InputError
from esrank.core.files import new_file
from esrank.engine import Engine
from esrank.judgments.lists import Judgment, JudgmentList

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """A judging prompt: the system and user text (`{query}` and `{product}` filled in) and
    the answer labels read from the reply's first token, with the grade each stands for."""

    name: str
    system: str
    user: str
    answers: Mapping[str, float]

    @property
    def id(self) -> str:
        """What every grade records: the prompt's name and a hash of its whole text."""
        text = json.dumps([self.system, self.user, dict(self.answers)], sort_keys=True)
        return f"{self.name}@{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def render(self, query: str, product: str) -> str:
        return self.user.format(query=query, product=product)


_SHOP = "You grade search results of an online shop for electronics and office supplies."

PROMPTS = {
    "grade": Prompt("grade", _SHOP, (
        "How well does the product match the search?\n"
        "3 = exactly what was searched for\n"
        "2 = a close match (a variant or a substitute)\n"
        "1 = related (an accessory or a part for it)\n"
        "0 = irrelevant\n\n"
        "Search: {query}\nProduct: {product}\n"
        "Answer with one digit."), {"0": 0, "1": 1, "2": 2, "3": 3}),
    "yesno": Prompt("yesno", _SHOP, (
        "Search: {query}\nProduct: {product}\n"
        "Is this product what the shopper searched for? Answer yes or no."),
        {"Yes": 3, "yes": 3, "No": 0, "no": 0}),
}


class Backend(Protocol):
    """A language model answering one chat turn."""

    model: str
    version: str

    def answer_logprobs(self, system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
        """Log-probability of each label as the first token of the reply (labels the model
        did not rank are left out)."""
        ...


class LocalBackend:
    """A GGUF model run in this process (`esrank.models.llm`)."""

    def __init__(self, lm):
        self.lm = lm
        self.model, self.version = lm.name, lm.version
        self._ids: dict[str, list[int]] | None = None  # stripped token text -> token ids

    def _label_ids(self, label: str) -> list[int]:
        """Every token that reads as `label` once stripped ("3", " 3"): the same answer, as
        the endpoint client counts it."""
        if len(self.lm.encode(label)) != 1:
            raise ConfigError(f"answer label {label!r} is {len(self.lm.encode(label))} tokens "
                              f"for {self.model}; labels must be single tokens")
        if self._ids is None:
            self._ids = {}
            for i in sorted(self.lm.tokenizer.get_vocab().values()):
                self._ids.setdefault(self.lm.decode([i]).strip(), []).append(i)
        return self._ids[label]

    def answer_logprobs(self, system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
        logprobs = self.lm.next_token_logprobs(self.lm.encode(self.lm.chat(user, system)))
        return {label: float(np.logaddexp.reduce(logprobs[self._label_ids(label)]))
                for label in labels}


class OpenAIBackend:
    """An OpenAI-compatible `POST {url}/chat/completions` (greedy, one token, top logprobs)."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 2):
        self.url = redact(url).rstrip("/") + "/chat/completions"  # what messages show
        # credentials in the URL (user:password@, a token@) go as basic auth, never in the URL
        url, auth = split_credentials(url, Auth(api_key=api_key))
        self._endpoint = url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", **auth.header("Bearer")}
        self.requested = model
        self.model = self.version = model  # then what each reply says served it
        self.timeout, self.retries = timeout, retries

    def _post(self, body: dict) -> dict:
        request = urllib.request.Request(self._endpoint, json.dumps(body).encode(), self._headers)
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.load(response)
            except urllib.error.HTTPError as exc:
                with exc:
                    detail = exc.read().decode(errors="replace")[:300]
                if exc.code < 500 or attempt == self.retries:
                    raise EsrankError(f"LLM endpoint {self.url}: HTTP {exc.code}: {detail}") \
                        from exc
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if attempt == self.retries:
                    raise EsrankError(f"LLM endpoint {self.url} unreachable: "
                                      f"{getattr(exc, 'reason', exc)}") from exc
            time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def answer_logprobs(self, system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
        reply = self._post({
            "model": self.requested, "temperature": 0, "max_tokens": 1,
            "logprobs": True, "top_logprobs": 20,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user}]})
        try:
            choice = reply["choices"][0]
            self.model = reply.get("model") or self.requested
            self.version = reply.get("system_fingerprint") or self.model
            content = (choice.get("logprobs") or {}).get("content") or []
            if content:
                # "3" and " 3" are the same answer: their probabilities add up
                found: dict[str, float] = {}
                for t in content[0].get("top_logprobs") or [content[0]]:
                    label, lp = t["token"].strip(), float(t["logprob"])
                    if label in labels:
                        found[label] = float(np.logaddexp(found.get(label, -np.inf), lp))
                return found
            text = (choice.get("message") or {}).get("content") or ""
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EsrankError(f"LLM endpoint {self.url}: unexpected reply "
                              f"{json.dumps(reply)[:300]}") from exc
        first = next((label for label in sorted(labels, key=len, reverse=True)
                      if text.strip().startswith(label)), None)
        return {first: 0.0} if first else {}


@dataclass(frozen=True)
class MachineGrade:
    """One LLM grade and how it was made."""

    query: str
    doc_id: str
    grade: int
    score: float  # expected grade under the answer probabilities (NaN: no label answered)
    model: str
    model_version: str
    prompt: str  # Prompt.id
    calibration: str = ""  # Calibration.id when the grade was mapped


def expected_grade(logprobs: Mapping[str, float], answers: Mapping[str, float]) -> float:
    """The answers' grades weighted by their probabilities, renormalised over the labels."""
    if not logprobs:
        return math.nan
    top = max(logprobs.values())
    weights = {label: math.exp(lp - top) for label, lp in logprobs.items()}
    return sum(w * answers[label] for label, w in weights.items()) / sum(weights.values())


def judge(pairs: Iterable[tuple[str, str, str]], backend: Backend,
          prompt: Prompt = PROMPTS["grade"], calibration: Calibration | None = None, *,
          workers: int = 1) -> Iterator[MachineGrade]:
    """Grade (query, doc id, product text) pairs, in their order, with `workers` questions in
    flight (an endpoint batches them; a local model answers one at a time, and reuses the
    prompt prefix a query's pairs share: keep them together). A `calibration` fitted on
    another prompt or model is refused."""
    labels = list(prompt.answers)
    if calibration is not None and calibration.prompt != prompt.id:
        raise InputError(f"the calibration {calibration.id} was fitted on prompt "
                         f"{calibration.prompt}, not {prompt.id}")

    def ask(pair: tuple[str, str, str]) -> dict[str, float]:
        return backend.answer_logprobs(prompt.system, prompt.render(pair[0], pair[2]), labels)

    def grades(pairs, answers) -> Iterator[MachineGrade]:
        for (query, doc_id, _), logprobs in zip(pairs, answers, strict=True):
            score = expected_grade(logprobs, prompt.answers)
            if calibration is not None:
                grade = calibration.grade(score)
            elif logprobs:
                grade = round(prompt.answers[max(logprobs, key=logprobs.get)])
            else:
                grade = 0
            if calibration is not None and backend.model != calibration.model:
                raise InputError(f"the calibration {calibration.id} was fitted on model "
                                 f"{calibration.model}, and {backend.model} answered")
            yield MachineGrade(query, doc_id, grade, score, backend.model, backend.version,
                               prompt.id, calibration.id if calibration else "")

    pairs = list(pairs)
    if workers <= 1:
        yield from grades(pairs, map(ask, pairs))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        yield from grades(pairs, pool.map(ask, pairs))


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """An isotonic map from a judge's score to the human grade scale, fitted on a calibration
    split: the mean human grade of each score interval, non-decreasing, rounded to a grade."""

    prompt: str
    model: str
    thresholds: tuple[float, ...]  # score knots
    values: tuple[float, ...]  # isotonic fit at each knot
    pairs: int = 0
    fitted_on: str = ""
    weighted_kappa: float | None = None  # vs people on held-out queries (calibrate)
    id: str = field(default="", compare=False)

    @classmethod
    def fit(cls, scores: Sequence[float], grades: Sequence[int], *, prompt: str, model: str,
            fitted_on: str = "", weighted_kappa: float | None = None) -> Calibration:
        from scipy.optimize import isotonic_regression

        xs, ys = np.asarray(scores, dtype=float), np.asarray(grades, dtype=float)
        keep = ~np.isnan(xs)
        if keep.sum() < 2:
            raise InputError(f"calibration needs at least 2 scored pairs, found {keep.sum()}")
        order = np.argsort(xs[keep], kind="stable")
        x, y = xs[keep][order], ys[keep][order]
        fitted = isotonic_regression(y).x
        # one knot per run of equal fitted values: its first and last score
        knots, values = [], []
        for i in range(len(x)):
            if i == 0 or i == len(x) - 1 or fitted[i] != fitted[i - 1] \
                    or fitted[i] != fitted[i + 1]:
                knots.append(float(x[i]))
                values.append(float(fitted[i]))
        body = json.dumps([prompt, model, knots, values])
        return cls(prompt, model, tuple(knots), tuple(values), int(keep.sum()), fitted_on,
                   weighted_kappa, hashlib.sha256(body.encode()).hexdigest()[:12])

    @property
    def trusted(self) -> bool:
        """Whether the judge agreed with people at least moderately on held-out queries."""
        return self.weighted_kappa is not None and self.weighted_kappa >= TRUSTED_KAPPA

    def value(self, score: float) -> float:
        """The expected human grade at `score` (NaN in: NaN out)."""
        if math.isnan(score):
            return math.nan
        return float(np.interp(score, self.thresholds, self.values))

    def grade(self, score: float) -> int:
        value = self.value(score)
        return 0 if math.isnan(value) else int(round(value))

    def save(self, path: Path) -> None:
        with new_file(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**{**data, "thresholds": tuple(data["thresholds"]),
                          "values": tuple(data["values"])})
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InputError(f"not a calibration file: {exc}", source=str(path)) from exc


TRUSTED_KAPPA = 0.4  # below it (weighted kappa vs people, held out), grades get a warning


def calibrate(grades: Sequence[MachineGrade], human: JudgmentList, *, fitted_on: str = ""
              ) -> tuple[Calibration, dict]:
    """Fit a calibration of `grades`' scores on the pairs `human` also judges, and report the
    agreement with the human grades: raw, and calibrated on held-out queries (two folds of
    queries, each mapped by a calibration fitted on the other)."""
    from esrank.judgments.agreement import pair_stats

    truth = {(j.query, j.doc_id): j.grade for j in human}
    shared = [g for g in grades if (g.query, g.doc_id) in truth and not math.isnan(g.score)]
    if not shared:
        raise InputError("no scored pair of the machine grades is in the human judgments "
                         "(pairs match on query text and doc id)", source=human.source)
    if len({(g.model, g.prompt) for g in shared}) > 1:
        raise InputError("the machine grades mix models or prompts; calibrate each apart")
    model, prompt = shared[0].model, shared[0].prompt
    queries = list(dict.fromkeys(g.query for g in shared))
    if len(queries) < 2:
        raise InputError(f"calibration needs pairs of at least 2 queries, found {len(queries)}")
    fold = {q: i % 2 for i, q in enumerate(queries)}
    held_out: list[int] = [0] * len(shared)
    for k in (0, 1):
        train = [g for g in shared if fold[g.query] != k]
        half = Calibration.fit([g.score for g in train], [truth[g.query, g.doc_id] for g in train],
                               prompt=prompt, model=model)
        for i, g in enumerate(shared):
            if fold[g.query] == k:
                held_out[i] = half.grade(g.score)
    y = [truth[g.query, g.doc_id] for g in shared]
    keys = ("n", "exact", "kappa", "weighted_kappa", "spearman")
    raw, out = pair_stats([g.grade for g in shared], y), pair_stats(held_out, y)
    report = {"pairs": len(shared), "queries": len(queries),
              "raw": {k: raw[k] for k in keys},
              "calibrated_held_out": {k: out[k] for k in keys}}
    cal = Calibration.fit([g.score for g in shared], y, prompt=prompt, model=model,
                          fitted_on=fitted_on or str(human.source),
                          weighted_kappa=round(out["weighted_kappa"], 4))
    report["calibration"] = cal.id
    return cal, report


def with_machine_grades(human: JudgmentList, grades: Iterable[MachineGrade]) -> JudgmentList:
    """The human judgments plus the machine grades of pairs no person judged, for the queries
    the human list holds (matched on query text); a person's grade always wins."""
    qid_of = {text: qid for qid, text in human.queries().items()}
    seen = {(j.query, j.doc_id) for j in human}
    added = []
    for g in grades:
        if g.query in qid_of and (g.query, g.doc_id) not in seen:
            seen.add((g.query, g.doc_id))
            added.append(Judgment(qid_of[g.query], g.query, g.doc_id, g.grade))
    return JudgmentList(human.judgments + tuple(added), source=f"{human.source} + machine")


# --------------------------------------------------------------------------- files

COLUMNS = ("query", "docid", "rating", "score", "source", "model", "model_version", "prompt",
           "calibration")


def write_grades(grades: Iterable[MachineGrade], path: Path) -> int:
    """Write machine grades as a judgments CSV (`query,docid,rating` reads them back) with
    their provenance in the other columns; returns the count."""
    n = 0
    with new_file(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for g in grades:
            w.writerow([g.query, g.doc_id, g.grade, "" if math.isnan(g.score) else
                        f"{g.score:.4f}", "llm", g.model, g.model_version, g.prompt,
                        g.calibration])
            n += 1
    return n


def read_grades(path: Path) -> list[MachineGrade]:
    """Read what `write_grades` wrote."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"not a machine-grades file: no column(s) {', '.join(missing)}",
                             source=str(path), line=1)
        try:
            return [MachineGrade(r["query"], r["docid"], int(r["rating"]),
                                 float(r["score"]) if r["score"] else math.nan, r["model"],
                                 r["model_version"], r["prompt"], r["calibration"])
                    for r in reader]
        except ValueError as exc:
            raise InputError(f"bad rating or score: {exc}", source=str(path),
                             line=reader.line_num) from exc


def pair_texts(engine: Engine, index: str, pairs: Iterable[tuple[str, str]]
               ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(query, doc id, product text) for each (query, doc id) pair whose product the index
    holds, a query's pairs together; and the doc ids the index lacks."""
    pairs = list(pairs)
    texts = fetch_texts(engine, index, {d for _, d in pairs})
    order = {q: i for i, q in enumerate(dict.fromkeys(q for q, _ in pairs))}
    found = sorted(((q, d, texts[d]) for q, d in pairs if d in texts), key=lambda p: order[p[0]])
    return found, sorted({d for _, d in pairs if d not in texts})
