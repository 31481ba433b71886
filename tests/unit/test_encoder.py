from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from esrank.core.errors import ConfigError
from esrank.models.encoder import load_encoder, model_dir

GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "minilm_golden.json").read_text())


def test_numpy_minilm_matches_sentence_transformers(encoder):
    got = encoder.encode(GOLDEN["texts"], batch_size=4)
    want = np.array(GOLDEN["vectors"], dtype=np.float32)
    assert got.shape == want.shape == (6, 384)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_vectors(encoder):
    texts = GOLDEN["texts"]
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    assert np.abs(encoder.encode(texts[::-1], batch_size=2)[::-1] - one_by_one).max() < 1e-5


def test_long_text_is_truncated_to_the_model_limit(encoder):
    assert encoder.max_tokens == 256
    long = "speaker " * 2000
    assert encoder.encode([long]).shape == (1, 384)


def test_unknown_model_folder_and_backend_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        model_dir(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown encoder backend"):
        load_encoder(backend="tensorrt")


def test_int8_onnx_stays_close_to_fp32_and_caches_apart(encoder, tmp_path):
    int8 = load_encoder(backend="onnx", precision="int8", onnx_dir=tmp_path)
    fp32 = load_encoder(backend="onnx", onnx_dir=tmp_path)
    texts = GOLDEN["texts"]
    assert np.abs(fp32.encode(texts) - encoder.encode(texts)).max() < 1e-5
    cosines = (int8.encode(texts) * encoder.encode(texts)).sum(axis=1)
    assert 0.97 < cosines.min() < 0.99999  # close, and really quantized
    assert int8.name.startswith("onnx-cpu-int8:") and int8.precision == "int8"
    assert fp32.key == encoder.key != int8.key  # fp32 backends share cached vectors
    with pytest.raises(ConfigError, match="unknown encoder precision"):
        load_encoder(precision="fp8")


def test_same_space_compares_weights_not_precision():
    from esrank.models.encoder import same_space

    assert same_space("minilm:00aa11bb22cc33dd:int8", "minilm:00aa11bb22cc33dd:fp32")
    assert same_space("a:00aa11bb22cc33dd:fp32", "b:00aa11bb22cc33dd:fp32")  # folder renamed
    assert not same_space("minilm:00aa11bb22cc33dd:int8", "minilm:99ee88ff77aa66bb:int8")
