from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def encoder():
    """The shipped MiniLM on the NumPy backend (the reference), loaded once per test session."""
    from esrank.encoder import load_encoder

    return load_encoder(backend="numpy")


@pytest.fixture(scope="session")
def llm():
    """The packaged SmolLM2-135M (GGUF, run with NumPy), loaded once per test session."""
    from esrank.llm import load_llm

    return load_llm()
