"""Feature-set files: loading, validation errors (file:line + feature), payloads and diffs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from esrank.core.errors import InputError
from esrank.core.feature_set import FeatureSet
from esrank.engine.dialect import DIALECTS
from esrank.features.parser import load_feature_set, load_feature_sets
from esrank.features.sync import diff_feature_sets

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "feature_sets"
CHORUS = REPO / "feature_sets" / "chorus.yaml"

CHORUS_FEATURES = (
    "title_bm25", "title_phrase", "title_and",
    "description_bm25", "description_phrase", "description_and",
    "supplier_bm25", "supplier_and", "attributes_bm25",
    "all_fields_best", "all_fields_cross", "price", "recency", "title_cosine",
    "text_cosine",
)


def write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chorus() -> FeatureSet:
    return load_feature_set(CHORUS)


@pytest.fixture(scope="module")
def tiny() -> FeatureSet:
    return load_feature_set(DATA / "good" / "tiny.yaml")


# -- chorus ---------------------------------------------------------------------------------

def test_chorus_loads_in_file_order(chorus: FeatureSet) -> None:
    assert chorus.name == "chorus"
    assert chorus.feature_names == CHORUS_FEATURES
    assert chorus.param("keywords").type == "string"
    assert chorus.param("query_vector").dims == 384
    cosine = chorus.features[-1]
    assert cosine.template_language == "vector_cosine"
    assert cosine.template == {"field": "text_vector"} and cosine.params == ("query_vector",)
    assert chorus.features[0].line is not None


def test_chorus_engine_name_is_stable(chorus: FeatureSet) -> None:
    again = load_feature_set(CHORUS)
    assert again.engine_name == chorus.engine_name
    assert chorus.engine_name == f"chorus@{chorus.content_hash}"
    assert len(chorus.content_hash) == 10
    int(chorus.content_hash, 16)


def test_engine_name_changes_with_a_template_but_not_a_description(tmp_path: Path) -> None:
    text = CHORUS.read_text(encoding="utf-8")
    base = load_feature_set(CHORUS).engine_name
    slop = write(tmp_path, text.replace("slop: 2", "slop: 3", 1), "slop.yaml")
    assert load_feature_set(slop).engine_name != base
    described = write(tmp_path, text.replace("The user's query text.", "Query."), "d.yaml")
    assert load_feature_set(described).engine_name == base


def test_param_lookup_names_the_declared_params(chorus: FeatureSet) -> None:
    with pytest.raises(KeyError, match="declared: keywords, query_vector"):
        chorus.param("nope")


# -- golden payload -------------------------------------------------------------------------

@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_plugin_payload_matches_golden(tiny: FeatureSet, flavor: str) -> None:
    golden = json.loads((DATA / f"tiny.{flavor}.json").read_text(encoding="utf-8"))
    assert golden["featureset"].pop("name") == "tiny@HASH"
    payload = DIALECTS[flavor].feature_set(tiny)
    assert payload["featureset"].pop("name") == tiny.engine_name
    assert payload == golden


def test_engine_name_hashes_the_file_not_the_rendering(tiny: FeatureSet) -> None:
    spec = [f.spec() for f in tiny.features]
    assert spec[-1]["template"] == {"field": "text_vector"}  # esrank's form, on any engine
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert tiny.engine_name == f"tiny@{hashlib.sha256(canonical.encode()).hexdigest()[:10]}"


def test_payload_is_a_copy(tiny: FeatureSet) -> None:
    payload = DIALECTS["opensearch"].feature_set(tiny)
    payload["featureset"]["features"][0]["template"]["match"]["title"] = "changed"
    assert tiny.features[0].template == {"match": {"title": "{{keywords}}"}}


def test_directory_loads_sorted_files_and_json() -> None:
    sets = load_feature_sets(DATA / "good")
    assert [fs.name for fs in sets] == ["small", "tiny"]  # small.json < tiny.yaml
    assert load_feature_sets(DATA / "good" / "tiny.yaml")[0].name == "tiny"


def test_directory_with_duplicate_set_names(tmp_path: Path) -> None:
    text = (DATA / "good" / "tiny.yaml").read_text(encoding="utf-8")
    write(tmp_path, text, "a.yaml")
    write(tmp_path, text, "b.yml")
    with pytest.raises(InputError, match=r"b\.yml: feature set 'tiny' is also defined in"):
        load_feature_sets(tmp_path)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such feature-set file"):
        load_feature_sets(tmp_path / "missing")
    with pytest.raises(InputError, match="no feature-set files"):
        load_feature_sets(tmp_path)


# -- bad files ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "line", "feature", "reason"), [
    ("duplicate_name", 8, "title_match", "duplicate feature name (first defined at line 5)"),
    ("unknown_param", 8, "title_match", "unknown param 'query_text'"),
    ("unused_param", 10, "brand_match", "param 'keywords' is listed but the template never"),
    ("unclosed_tag", 10, "maybe_title", "the tag \"keywords\" was never closed"),
    ("invalid_json", 8, "title_match", "not valid JSON once rendered"),
    ("unknown_key", 4, None, "unknown key 'feature'"),
    ("script_reference", 12, "title_cosine", "'title_bm25' is not another feature"),
    ("malformed", 7, None, "malformed YAML"),
])
def test_bad_file_names_file_line_and_feature(name: str, line: int, feature: str | None,
                                              reason: str) -> None:
    path = DATA / "bad" / f"{name}.yaml"
    with pytest.raises(InputError) as info:
        load_feature_set(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert info.value.line == line
    assert reason in message
    if feature is not None:
        assert f"feature {feature!r}" in message


SET_HEAD = """\
name: inline
params:
  keywords: {type: string}
  qv: {type: vector, dims: 2}
features:
  - name: title_match
    params: [keywords]
    template: {match: {title: "{{keywords}}"}}
"""


@pytest.mark.parametrize(("tail", "line", "reason"), [
    # mustache uses a param the feature does not list
    ('  - name: f\n    params: [keywords]\n    template: {match: {t: "{{qv}}"}}\n',
     11, "template uses 'qv' but the feature's params are [keywords]"),
    # toJson references an unlisted param
    ("  - name: f\n    params: [keywords]\n"
     "    template: '{\"x\": {{#toJson}}qv{{/toJson}}, \"y\": \"{{keywords}}\"}'\n",
     11, "{{#toJson}} uses 'qv'"),
    ("  - name: f\n    params: [qv]\n"
     "    template: {knn: {v: {vector: '{{#toJson}}qv{{/toJson}}', k: 3}}}\n",
     11, "{{#toJson}} in an object template renders a string"),
    # derived expression may only read earlier features
    ("  - name: f\n    template_language: derived_expression\n    template: later * 2\n"
     "  - name: later\n    params: [keywords]\n    template: {match: {t: \"{{keywords}}\"}}\n",
     11, "derived_expression uses 'later'"),
    ("  - name: f\n    template_language: derived_expression\n    template: {a: 1}\n",
     11, "expected an expression string"),
    ("  - name: f\n    template_language: script_feature\n    template: {source: x}\n",
     11, "script_feature template: missing 'lang'"),
    ("  - name: f\n    params: [qv]\n    template_language: script_feature\n"
     "    template: {lang: painless, source: x, params: {extra_script_params: {v: keywords}}}\n",
     12, "extra_script_params.v: expected a param in the feature's params [qv]"),
    ("  - name: f\n    template_language: lucene\n    template: x\n",
     10, "template_language expected one of mustache, derived_expression, script_feature"),
    ("  - name: f\n    params: [keywords]\n    tmplate: {}\n", 11, "unknown key 'tmplate'"),
    # vector_cosine: one vector param and a field, nothing else
    ("  - name: f\n    params: [qv]\n    template_language: vector_cosine\n"
     "    template: {feild: v}\n", 12, "vector_cosine template: unknown key 'feild'"),
    ("  - name: f\n    params: [qv]\n    template_language: vector_cosine\n"
     "    template: {}\n", 12, "vector_cosine template: missing 'field'"),
    ("  - name: f\n    params: [keywords]\n    template_language: vector_cosine\n"
     "    template: {field: v}\n", 12, "exactly one vector param, found [keywords]"),
    ("  - name: f\n    params: [qv, keywords]\n    template_language: vector_cosine\n"
     "    template: {field: v}\n", 12, "exactly one vector param, found [qv, keywords]"),
])
def test_inline_bad_features(tmp_path: Path, tail: str, line: int, reason: str) -> None:
    path = write(tmp_path, SET_HEAD + tail)
    with pytest.raises(InputError) as info:
        load_feature_set(path)
    assert str(info.value).startswith(f"{path}:{line}: feature 'f': "), str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("name: a@b\nfeatures: []\n", 1, "'@' is reserved"),
    ("name: a\nfeatures: []\n", 2, "expected a non-empty list"),
    ("name: a\nparams:\n  v: {type: vector}\nfeatures: []\n", 3, "needs 'dims'"),
    ("name: a\nparams:\n  v: {type: text}\nfeatures: []\n", 3, "found 'text'"),
    ("name: a\nparams:\n  esrank_window: {type: string}\nfeatures: []\n", 3,
     "the name is reserved"),
    ("name: a\nparams:\n  n: {type: number, dims: 2}\nfeatures: []\n", 3,
     "'dims' applies only to vector params"),
    ("name: a\nname: b\nfeatures: []\n", 2, "duplicate key 'name' (first at line 1)"),
    ("features: [{name: f, template: {}}]\n", 1, "missing required key 'name'"),
    ("", 1, "empty feature-set file"),
])
def test_bad_set_level(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_feature_set(path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert reason in str(info.value)


def test_query_independent_feature_needs_no_params(tmp_path: Path) -> None:
    fs = load_feature_set(write(tmp_path, SET_HEAD + (
        "  - name: prior\n    params: []\n"
        "    template: {function_score: {query: {match_all: {}}}}\n")))
    assert fs.features[-1].params == ()
    assert fs.features[-1].spec()["params"] == []


# -- diff -----------------------------------------------------------------------------------

def _stored(tiny: FeatureSet, flavor: str = "opensearch") -> list[dict]:
    return DIALECTS[flavor].feature_set(tiny)["featureset"]["features"]


def test_diff_identical(tiny: FeatureSet) -> None:
    for flavor, dialect in DIALECTS.items():
        assert diff_feature_sets(tiny, _stored(tiny, flavor), dialect) == {
            "added": [], "removed": [], "changed": [], "same": list(tiny.feature_names)}
    # a set stored by the other engine's rendering differs in its cosine feature only
    other = diff_feature_sets(tiny, _stored(tiny, "elasticsearch"), DIALECTS["opensearch"])
    assert other["changed"] == ["text_cosine"]


def test_diff_added_removed_changed(tiny: FeatureSet) -> None:
    engine = _stored(tiny)
    engine[0]["template"] = {"match": {"body": "{{keywords}}"}}  # changed
    del engine[2]                                                # boosted: added locally
    engine.append({"name": "old", "params": [], "template_language": "mustache",
                   "template": {"match_all": {}}})               # removed locally
    assert diff_feature_sets(tiny, engine, DIALECTS["opensearch"]) == {
        "added": ["boosted"], "removed": ["old"], "changed": ["title_match"],
        "same": ["title_knn", "cosine", "text_cosine"]}


def test_diff_normalizes_plugin_defaults_and_string_templates(tiny: FeatureSet) -> None:
    engine = _stored(tiny)
    first = engine[0]
    first["template"] = json.dumps(first["template"], indent=2)  # stored as a JSON string
    del first["template_language"]                                # plugin default: mustache
    del engine[2]["params"]                                       # absent == []
    assert diff_feature_sets(tiny, engine, DIALECTS["opensearch"])["same"] == \
        list(tiny.feature_names)


def test_diff_rejects_nameless_engine_features(tiny: FeatureSet) -> None:
    with pytest.raises(InputError, match="engine feature #0 has no name"):
        diff_feature_sets(tiny, [{"template": {}}], DIALECTS["opensearch"])
