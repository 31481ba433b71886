"""The diversity stage over the plugin's served sltr ranking, on a 12-product index of three
brands with a stand-in model (linear in log price): the same page through the library, the
sidecar's /search, search_many (what evaluate runs) and the comparison page."""

from __future__ import annotations

import json
import uuid

import pytest
from support.cleanup import remove_deployed

from esrank.catalogue.index import index_catalogue
from esrank.core.feature_set import Feature, FeatureSet, QueryParam
from esrank.core.stamps import utc
from esrank.deploy import registry
from esrank.ranking.diversity import Diversity, brand_key, capped
from esrank.ranking.search import Ranker, search, search_many
from esrank.serve import create_app

BRANDS = "AABACBBACCAB"  # by price, dearest first: the served order
PRICE = {"function_score": {"query": {"match_all": {}}, "boost_mode": "replace",
                            "field_value_factor": {"field": "price", "modifier": "log1p",
                                                   "missing": 0}}}


@pytest.fixture(scope="module")
def shop(engine, encoder, tmp_path_factory):
    """(alias, the stand-in model as the search path serves it, its feature set's name): 12
    speakers, the model active for a private feature set; all removed afterwards."""
    tmp = tmp_path_factory.mktemp("diversity")
    products = tmp / "speakers.jsonl"
    products.write_text("".join(json.dumps({
        "id": f"s{i}", "title": f"Speaker model {i}", "supplier": f"Brand {b}",
        "short_description": "A portable speaker", "price": 10_000 - 500 * i}) + "\n"
        for i, b in enumerate(BRANDS)))
    alias = f"test-div-{uuid.uuid4().hex[:8]}"
    report = index_catalogue(engine, alias, [products], encoder, progress=False)
    fs = FeatureSet(f"div{uuid.uuid4().hex[:8]}", "", (QueryParam("keywords", "string"),),
                    (Feature("price", (), "mustache", PRICE),))
    engine.ensure_store()
    engine.put_feature_set(fs)
    name = f"{fs.name}-v1"
    engine.create_model(fs.engine_name, name, {"type": "model/linear",
                                               "definition": {"price": 1.0}})
    registry.record(engine, fs.name, name, registry.DeployedModel(
        fs.engine_name, fs.params, fs.feature_names, None, utc(), {}, {}), activate=True)
    yield alias, registry.active_model(engine, fs.name), fs.name
    remove_deployed(engine, fs.name, [report.index])


def _ids(hits) -> list[str]:
    return [h.doc_id for h in hits]


def test_the_stage_reorders_the_served_sltr_ranking(engine, shop):
    alias, model, _ = shop
    served = search(engine, alias, "speaker", Ranker(model.name, model), size=12)
    assert _ids(served.hits) == [f"s{i}" for i in range(12)]  # the model's order: by price
    brands = [brand_key(h.supplier) for h in served.hits]
    capped_page = search(engine, alias, "speaker", Ranker(model.name, model,
                                                          diversity=Diversity(cap=1)), size=12)
    top = [brand_key(h.supplier) for h in capped_page.hits[:3]]
    assert sorted(top) == ["brand a", "brand b", "brand c"]  # one per brand in the top 3
    # otherwise the served order: the capped products, then the rest, each in order
    assert _ids(capped_page.hits) == [f"s{i}" for i in capped(range(12), brands, 1)]
    assert [h.score for h in capped_page.hits] == [served.hits[int(d[1:])].score
                                                   for d in _ids(capped_page.hits)]
    same = search(engine, alias, "speaker", Ranker(model.name, model,
                                                   diversity=Diversity(mmr=1.0)), size=12)
    assert _ids(same.hits) == _ids(served.hits) and same.ranker == f"{model.name}+mmr1"


def test_the_sidecar_and_search_many_serve_the_same_page(engine, shop, encoder,
                                                         engine_settings):
    alias, model, set_name = shop
    client = create_app(engine_settings(index=alias, active_set=set_name),
                        encoder=encoder).test_client()
    for which, diversity in (("active+cap1", Diversity(cap=1)),
                             ("active+mmr0.5+cap2", Diversity(2, 0.5))):
        r = client.post("/search", json={"query": "speaker", "model": which, "size": 5})
        assert r.status_code == 200, r.json
        assert r.json["ranker"] == f"{model.name}{diversity.suffix}"
        ranker = Ranker(model.name, model, diversity=diversity)
        library = search(engine, alias, "speaker", ranker, size=5)
        many = search_many(engine, alias, ["speaker"], ranker, None, size=100, source=False)
        assert [h["doc_id"] for h in r.json["hits"]] == _ids(library.hits) == \
            _ids(many["speaker"][:5])
        sides = client.post("/compare/query", json={"query": "speaker", "size": 5,
                                                    "configs": [model.name, which]}).json
        assert [h["doc_id"] for h in sides["sides"][1]["hits"]] == _ids(library.hits)
    offered = client.get("/compare/configs").json["configs"]
    assert {f"{model.name}+mmr0.7", f"{model.name}+cap2"} <= set(offered)
    bad = client.post("/search", json={"query": "speaker", "model": "active+cap0"})
    assert bad.status_code == 400 and "+cap0" in bad.json["error"]
