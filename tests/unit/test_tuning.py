"""Fine-tuning's inputs (no torch needed): the bi-encoder's training examples and the checks
made before any training."""

from __future__ import annotations

import pytest

from esrank.core.errors import ConfigError
from esrank.models.tuning import encoder_examples, train_cross_encoder, train_encoder

QUERIES = ["tv", "tv", "tv", "tv", "mouse", "mouse", "cable"]
DOCS = ["tv a", "tv b", "remote", "bracket", "mouse a", "pad", "cable a"]
GRADES = [3, 2, 0, 0, 3, 1, 0]


def test_each_relevant_pair_gets_one_of_its_querys_irrelevant_docs():
    examples = encoder_examples(QUERIES, DOCS, GRADES)
    assert [(q, d) for q, d, _ in examples] == [("tv", "tv a"), ("tv", "tv b"),
                                                ("mouse", "mouse a")]
    assert {n for q, _, n in examples if q == "tv"} <= {"remote", "bracket"}
    assert examples[2][2] is None  # "pad" is graded 1: neither relevant nor a negative
    assert encoder_examples(QUERIES, DOCS, GRADES, relevant=1)[-1] == ("mouse", "pad", None)
    assert encoder_examples(QUERIES, DOCS, GRADES) == encoder_examples(QUERIES, DOCS, GRADES)


@pytest.mark.parametrize("train", [train_encoder, train_cross_encoder])
def test_zero_epochs_is_refused_before_anything_is_written(train, tmp_path):
    with pytest.raises(ConfigError, match="epochs must be 1 or more, found 0"):
        train(tmp_path, QUERIES, DOCS, GRADES, tmp_path / "out", epochs=0)
    assert not (tmp_path / "out").exists()


def test_judgments_without_a_relevant_pair_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no judged pair has grade >= 2"):
        train_encoder(tmp_path, ["tv", "tv"], ["remote", "tv a"], [0, 1], tmp_path / "out")
