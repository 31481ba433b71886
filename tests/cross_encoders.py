"""A real cross-encoder for tests, built from the packaged MiniLM without torch."""

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

    from esrank.encoder import model_dir

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
