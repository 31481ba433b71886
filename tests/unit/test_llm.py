"""The NumPy GGUF runtime against transformers (tests/data/smollm2_golden.json was written by
transformers + torch loading the same GGUF file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from esrank.core.errors import ConfigError
from esrank.models.llm import llm_path

GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "smollm2_golden.json").read_text())


def test_tokenizer_matches_transformers(llm):
    assert llm.encode(GOLDEN["text"]) == GOLDEN["text_ids"]
    assert llm.encode(GOLDEN["prompt"]) == GOLDEN["prompt_ids"]
    assert llm.decode(GOLDEN["text_ids"]) == GOLDEN["text"]


def test_next_token_logprobs_match_transformers(llm):
    logprobs = llm.next_token_logprobs(GOLDEN["prompt_ids"])
    assert logprobs.shape == (49152,)
    assert np.isclose(np.exp(logprobs).sum(), 1.0)
    want_ids = [i for i, _ in GOLDEN["top5"]]
    assert np.argsort(-logprobs)[:5].tolist() == want_ids
    assert np.abs(logprobs[want_ids] - [lp for _, lp in GOLDEN["top5"]]).max() < 1e-4


def test_prefix_reuse_gives_the_same_logprobs_as_a_cold_start(llm):
    a = llm.encode(llm.chat("Search: usb cable\nProduct: HP toner, black\nRelevant?"))
    b = llm.encode(llm.chat("Search: usb cable\nProduct: Belkin USB cable, 3 m\nRelevant?"))
    llm.next_token_logprobs(a)  # b now shares a's prefix
    warm = llm.next_token_logprobs(b)
    llm._ids, llm._cache = [], []
    assert np.abs(warm - llm.next_token_logprobs(b)).max() < 1e-4


def test_greedy_generation_answers_and_stops_at_the_end_of_turn(llm):
    ids, first = llm.generate(llm.encode(llm.chat("What is the capital of France?")), 30)
    assert "Paris" in llm.decode(ids)
    assert len(ids) < 30  # stopped at <|im_end|>
    assert int(np.argmax(first)) == ids[0]


def test_a_prompt_beyond_the_context_is_refused(llm):
    with pytest.raises(ValueError, match="exceed the context"):
        llm.forward([1] * (llm.context + 1))


def test_a_model_that_is_not_a_gguf_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="expected a .gguf file"):
        llm_path(str(tmp_path / "model.bin"))
