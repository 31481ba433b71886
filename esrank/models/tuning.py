"""Fine-tuning the packaged MiniLM on a shop's judgments: as a cross-encoder (`esrank
cross-encoder train`, the rerank stage or a `cross_encoder` feature) or as the bi-encoder
itself (`esrank encoder train`, a new encoder version for the cosine features).

Both need torch + transformers (pip install 'esrank[torch]'); what they write runs without
it (ONNX Runtime or NumPy). Each writes a standard transformers folder (+ tokenizer and a
meta.json of how it was trained) into a new folder, complete or not at all.

>>> meta = train_encoder(model_dir(), queries, docs, grades, Path("models/enc"))  # doctest: +SKIP
>>> meta["examples"], meta["seconds"]                                             # doctest: +SKIP
(1086, 262.4)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esrank.core.errors import ConfigError
from esrank.core.files import check_new_folder, new_folder

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
RELEVANT = 2  # the lowest grade a bi-encoder is trained to pull towards its query


def _torch(what: str, epochs: int):
    if epochs < 1:
        raise ConfigError(f"training {what}: epochs must be 1 or more, found {epochs}")
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(f"training {what} needs torch: pip install 'esrank[torch]'") from exc
    return torch, transformers


def _fit(torch, model, n: int, loss_of: Callable[[list[int]], Any], *, epochs: int,
         batch_size: int, lr: float, what: str, progress: bool) -> tuple[float, float, float]:
    """Train `model` on `n` items for `epochs` (shuffled each epoch; `loss_of(batch)` is the
    loss of a batch of item indices) with AdamW, a linear warm-up over the first tenth of the
    steps and a linear decay to 0. The first and last epochs' mean loss, and the seconds."""
    from tqdm import tqdm

    per_epoch = (n + batch_size - 1) // batch_size
    steps = epochs * per_epoch
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    model.train()
    started, losses = time.monotonic(), []
    with tqdm(total=steps, desc=what, unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(n).tolist()
            for start in range(0, n, batch_size):
                loss = loss_of(order[start:start + batch_size])
                loss.backward()
                optim.step()
                sched.step()
                optim.zero_grad()
                losses.append(loss.item())
                bar.update(1)
    return (round(float(np.mean(losses[:per_epoch])), 4),
            round(float(np.mean(losses[-per_epoch:])), 4), round(time.monotonic() - started, 1))


def _save(model, base: Path, tmp: Path, meta: dict) -> None:
    model.save_pretrained(str(tmp), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, tmp / name)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def train_cross_encoder(base: Path, queries: Sequence[str], docs: Sequence[str],
                        grades: Sequence[int], out: Path, *, epochs: int = 2,
                        batch_size: int = 16, lr: float = 3e-5, max_tokens: int = 128,
                        max_grade: int = 3, seed: int = 42, progress: bool = True) -> dict:
    """Fine-tune a BERT (e.g. the packaged MiniLM) as a one-label cross-encoder on graded
    (query, doc) pairs: binary cross-entropy on grade / max_grade, every layer trained.
    Writes a `BertForSequenceClassification` folder to `out`."""
    torch, transformers = _torch("a cross-encoder", epochs)
    check_new_folder(out)  # before the training, not after
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(base), num_labels=1, local_files_only=True).to(device)
    labels = torch.tensor([g / max_grade for g in grades], dtype=torch.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def loss_of(idx: list[int]):
        batch = tok([queries[j] for j in idx], [docs[j] for j in idx], padding=True,
                    truncation="only_second", max_length=max_tokens,
                    return_tensors="pt").to(device)
        return loss_fn(model(**batch).logits[:, 0], labels[idx].to(device))

    first, last, seconds = _fit(torch, model, len(queries), loss_of, epochs=epochs,
                                batch_size=batch_size, lr=lr, what="cross-encoder",
                                progress=progress)
    meta = {"base": str(base), "pairs": len(queries), "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "max_tokens": max_tokens, "device": device, "seconds": seconds,
            "loss_first_epoch": first, "loss_last_epoch": last}
    with new_folder(out) as tmp:
        _save(model, base, tmp, meta)
    return meta


def encoder_examples(queries: Sequence[str], docs: Sequence[str], grades: Sequence[int], *,
                     relevant: int = RELEVANT, seed: int = 42
                     ) -> list[tuple[str, str, str | None]]:
    """(query, a relevant doc, one of the query's irrelevant docs or None) for each judged
    pair graded `relevant` or more; the negative is drawn at random (grade 0)."""
    rng = np.random.default_rng(seed)
    negatives: dict[str, list[str]] = {}
    for q, d, g in zip(queries, docs, grades, strict=True):
        if g == 0:
            negatives.setdefault(q, []).append(d)
    return [(q, d, str(rng.choice(negatives[q])) if q in negatives else None)
            for q, d, g in zip(queries, docs, grades, strict=True) if g >= relevant]


def train_encoder(base: Path, queries: Sequence[str], docs: Sequence[str],
                  grades: Sequence[int], out: Path, *, epochs: int = 1, batch_size: int = 32,
                  lr: float = 2e-5, max_tokens: int = 128, relevant: int = RELEVANT,
                  scale: float = 20.0, seed: int = 42, progress: bool = True) -> dict:
    """Fine-tune a sentence encoder (BERT, mean pooling, unit vectors) on graded (query, doc)
    pairs, every layer trained: each query is pulled towards a relevant doc and away from
    the batch's other docs and one of its own irrelevant ones (in-batch softmax over cosines
    x `scale`; docs relevant to the same query are not counted as negatives). Writes a
    `BertModel` folder with the base's pooling files, which `ESRANK_ENCODER__MODEL` loads.
    """
    check_new_folder(out)
    examples = encoder_examples(queries, docs, grades, relevant=relevant, seed=seed)
    if not examples:
        raise ConfigError(f"no judged pair has grade >= {relevant}: nothing to train on")
    torch, transformers = _torch("an encoder", epochs)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = transformers.BertModel.from_pretrained(str(base), add_pooling_layer=False,
                                                   local_files_only=True).to(device)

    def embed(texts: list[str]):
        batch = tok(texts, padding=True, truncation=True, max_length=max_tokens,
                    return_tensors="pt").to(device)
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def loss_of(idx: list[int]):
        batch = [examples[j] for j in idx]
        n = len(batch)
        q = embed([b[0] for b in batch])
        d = embed([b[1] for b in batch] + [b[2] for b in batch if b[2] is not None])
        logits = scale * q @ d.T
        same = torch.tensor([[batch[a][0] == batch[b][0] and a != b for b in range(n)]
                             for a in range(n)], device=device)
        logits[:, :n] = logits[:, :n].masked_fill(same, -1e4)
        return torch.nn.functional.cross_entropy(logits, torch.arange(n, device=device))

    first, last, seconds = _fit(torch, model, len(examples), loss_of, epochs=epochs,
                                batch_size=batch_size, lr=lr, what="encoder",
                                progress=progress)
    meta = {"base": str(base), "examples": len(examples),
            "queries": len({e[0] for e in examples}), "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "max_tokens": max_tokens, "relevant": relevant,
            "scale": scale, "device": device, "seconds": seconds,
            "loss_first_epoch": first, "loss_last_epoch": last}
    with new_folder(out) as tmp:
        _save(model, base, tmp, meta)
        for name in ("sentence_bert_config.json", "modules.json",
                     "config_sentence_transformers.json"):
            if (base / name).is_file():
                shutil.copy(base / name, tmp / name)
        if (base / "1_Pooling").is_dir():
            shutil.copytree(base / "1_Pooling", tmp / "1_Pooling")
    return meta
