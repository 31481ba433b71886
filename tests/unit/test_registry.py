"""The registry document as records: what is stored reads back the same, and the pointer
keeps the history rollback needs."""

from __future__ import annotations

import pytest

from esrank.core.errors import UnknownModelError
from esrank.core.feature_set import QueryParam
from esrank.deploy.registry import DeployedModel, RegistryEntry, version_of


def _model(excluded=None, cv=None) -> DeployedModel:
    return DeployedModel("chorus@abc", (QueryParam("keywords", "string"),), ("bm25_title",),
                         "/models/1", "2026-12-01T00:00:00Z",
                         {"max_abs_delta": 5.9e-08, "passed": True},
                         {"excluded_features": excluded, "cv": cv})


def test_an_entry_reads_back_what_it_stores():
    doc = RegistryEntry("chorus", "chorus-v2", ["chorus-v1"],
                        {"chorus-v1": _model(), "chorus-v2": _model(["title_cosine"])})
    stored = doc.to_dict()
    again = RegistryEntry.from_dict(stored, {"if_seq_no": 3, "if_primary_term": 1})
    assert again == doc and again.to_dict() == stored and again.version["if_seq_no"] == 3
    assert again.models["chorus-v2"].parity_max_delta == 5.9e-08


def test_the_pointer_keeps_the_replaced_model_last_in_the_history():
    doc = RegistryEntry("chorus", "chorus-v1", ["chorus-v2"])
    doc.point("chorus-v2")
    assert doc.active == "chorus-v2" and doc.history == ["chorus-v1"]
    doc.point("chorus-v2")  # re-pointing at the active model changes nothing
    assert doc.history == ["chorus-v1"]


def test_an_unknown_model_names_the_deployed_ones():
    doc = RegistryEntry("chorus", models={"chorus-v1": _model()})
    assert doc.deployed("chorus-v1").serving("chorus-v1").feature_set == "chorus@abc"
    with pytest.raises(UnknownModelError, match=r"chorus-v9.*\['chorus-v1'\]"):
        doc.deployed("chorus-v9")


def test_notes_and_cv_text():
    assert _model().note is None and _model().cv_text == "no CV"
    m = _model(["text_cosine", "title_cosine"],
               {"view": "served", "mean": 0.6721, "condensed": {"mean": 0.748}})
    assert m.note == "without text_cosine, title_cosine"
    assert m.cv_text == "served CV ndcg@10 0.672 / 0.748 condensed"
    assert version_of("chorus-v12") == ("chorus", 12) and version_of("x") == ("x", None)
