"""Check an exported encoder: its ONNX (fp32, int8) embeddings against the NumPy reference."""

from __future__ import annotations

import logging
from pathlib import Path

from esrank.core.errors import ModelError
from esrank.models.onnx_export import export_onnx

log = logging.getLogger(__name__)


CHECK_SENTENCES = ["bluetooth speaker", "HP 301 black ink cartridge", "a",
                   "Sony Portable Bluetooth Speaker MBS-100 docking speaker 1.0 channels Black",
                   "wireless noise cancelling over-ear headphones with 30 hours of battery " * 20]


def export_and_check(model: Path, out: Path, *, min_cosine: float = 0.9999) -> dict:
    """Export `model` to `out` and check it: every test sentence's cosine to the reference
    (torch when installed, else the NumPy backend) must reach `min_cosine` (ModelError)."""
    from esrank.models.encoder import NumpyBertEncoder, OnnxEncoder, available_backends

    export_onnx(model, out)
    if "torch" in available_backends():
        from esrank.models.encoder import TorchEncoder

        reference = TorchEncoder(model)
    else:
        reference = NumpyBertEncoder(model)
    cosines = (OnnxEncoder(model, out, "fp32").encode(CHECK_SENTENCES)
               * reference.encode(CHECK_SENTENCES)).sum(axis=1)
    if cosines.min() < min_cosine:
        raise ModelError(f"the export disagrees with {reference.name}: min cosine "
                         f"{cosines.min():.6f}")
    return {"onnx": str(out), "reference": reference.name, "min_cosine": float(cosines.min()),
            "bytes": out.stat().st_size}
