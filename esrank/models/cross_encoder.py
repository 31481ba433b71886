"""The cross-encoder stage: score (query, document) pairs jointly and rerank the top hits.

A cross-encoder is any BERT `*ForSequenceClassification` folder (config.json, tokenizer.json,
model.safetensors), user-supplied or trained by `esrank cross-encoder train`. It runs on ONNX
Runtime through esrank's own export (no torch at serving time). One label: the score is the
logit; two or more: the probability of the last label (relevant).

>>> ce = load_cross_encoder(Path("models/ce"))                 # doctest: +SKIP
>>> ce.score("bluetooth speaker", ["Sony Portable Bluetooth Speaker", "HP ink"])  # doctest: +SKIP
array([ 2.1, -3.4], dtype=float32)
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esrank.core.errors import ConfigError

log = logging.getLogger(__name__)


class CrossEncoder:
    def __init__(self, path: Path, onnx_file: Path, max_tokens: int = 256):
        from tokenizers import Tokenizer

        from esrank.models.onnx_export import is_classifier, onnx_session

        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ConfigError(f"cross-encoder {path}: no config.json")
        cfg = json.loads(cfg_file.read_text())
        if not is_classifier(cfg):
            raise ConfigError(f"cross-encoder {path}: config.json architectures "
                              f"{cfg.get('architectures')} has no *ForSequenceClassification")
        self.path, self.name = path, f"cross-encoder:{path.name}"
        digest = hashlib.sha256()
        with open(path / "model.safetensors", "rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
        self.key = f"{path.name}@{digest.hexdigest()[:12]}"  # the weights, not the path
        self.labels = int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 1)
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.enable_truncation(max_tokens, strategy="only_second")
        self._tok.no_padding()
        self._session, _ = onnx_session(path, onnx_file)
        log.info("cross-encoder %s loaded (%s)", path, self._session.get_providers()[0])

    def score(self, query: str, docs: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One relevance score per doc (higher is more relevant)."""
        out = np.zeros(len(docs), dtype=np.float32)
        encodings = self._tok.encode_batch([(query, d) for d in docs])
        for start in range(0, len(docs), batch_size):
            chunk = encodings[start:start + batch_size]
            t = max(len(e.ids) for e in chunk)
            ids = np.zeros((len(chunk), t), dtype=np.int64)
            types = np.zeros((len(chunk), t), dtype=np.int64)
            mask = np.zeros((len(chunk), t), dtype=np.float32)
            for row, e in enumerate(chunk):
                ids[row, :len(e.ids)], types[row, :len(e.ids)] = e.ids, e.type_ids
                mask[row, :len(e.ids)] = 1.0
            logits = self._session.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                                    "token_type_ids": types})[0]
            if self.labels == 1:
                out[start:start + len(chunk)] = logits[:, 0]
            else:
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                out[start:start + len(chunk)] = e[:, -1] / e.sum(axis=1)
        return out

    def relevance(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """`score` as a probability in [0, 1] (the sigmoid of a one-label logit): what a
        `source: cross_encoder` feature param carries, since the engine refuses negative
        boosts."""
        scores = self.score(query, docs)
        return 1.0 / (1.0 + np.exp(-scores)) if self.labels == 1 else scores


def load_cross_encoder(path: Path, cache: Path | None = None) -> CrossEncoder:
    """Load a cross-encoder folder; its ONNX export is cached under `cache` (default: the
    system temp folder), keyed by the folder and its weights' timestamp."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"cross-encoder {path}: no model.safetensors")
    key = hashlib.sha256(f"{path.resolve()}:{weights.stat().st_mtime_ns}".encode()).hexdigest()
    folder = cache or Path(tempfile.gettempdir()) / "esrank-onnx"
    return CrossEncoder(path, folder / f"cross-encoder-{key[:12]}.onnx")
