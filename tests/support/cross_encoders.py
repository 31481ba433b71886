"""Real models for tests, built from the packaged MiniLM without torch: a cross-encoder, and
another version of the encoder (other weights)."""

from __future__ import annotations

from pathlib import Path


def build_cross_encoder(out: Path, bias: float = 0.1) -> Path:
    """A BertForSequenceClassification folder from the packaged MiniLM with a fixed random
    head (seed 0; `bias` makes another model with other weights): a real cross-encoder for
    tests, built without torch."""
    import json
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from esrank.models.encoder import model_dir

    src = model_dir()
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(architectures=["BertForSequenceClassification"], num_labels=1)
    (out / "config.json").write_text(json.dumps(cfg))
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
    weights = {f"bert.{k}": v for k, v in load_file(str(src / "model.safetensors")).items()}
    rng = np.random.default_rng(0)
    weights["classifier.weight"] = rng.normal(0, 0.5, (1, 384)).astype(np.float32)
    weights["classifier.bias"] = np.array([bias], np.float32)
    save_file(weights, str(out / "model.safetensors"))
    return out


def build_encoder_version(out: Path, noise: float = 0.02) -> Path:
    """The packaged MiniLM with noise (seed 0) added to its word embeddings: an encoder with
    other weights, as `esrank encoder train` makes one, built without torch."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from esrank.models.encoder import model_dir

    src = model_dir()
    for name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
        shutil.copy(src / name, out / name)
    weights = load_file(str(src / "model.safetensors"))
    table = weights["embeddings.word_embeddings.weight"]
    rng = np.random.default_rng(0)
    weights["embeddings.word_embeddings.weight"] = (
        table + rng.normal(0, noise, table.shape)).astype(np.float32)
    save_file(weights, str(out / "model.safetensors"))
    return out
