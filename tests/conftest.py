from __future__ import annotations

from pathlib import Path

import pytest
from support.cross_encoders import build_cross_encoder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def encoder():
    """The shipped MiniLM on the NumPy backend (the reference), loaded once per test session."""
    from esrank.models.encoder import load_encoder

    return load_encoder(backend="numpy")


@pytest.fixture(scope="session")
def llm():
    """The packaged SmolLM2-135M (GGUF, run with NumPy), loaded once per test session."""
    from esrank.models.llm import load_llm

    return load_llm()


@pytest.fixture(scope="session")
def ce_dir(tmp_path_factory):
    return build_cross_encoder(tmp_path_factory.mktemp("ce"))


@pytest.fixture(scope="session")
def ce(ce_dir, tmp_path_factory):
    """The test cross-encoder (build_cross_encoder) on ONNX Runtime, loaded once."""
    from esrank.models.cross_encoder import load_cross_encoder

    return load_cross_encoder(ce_dir, tmp_path_factory.mktemp("onnx"))

