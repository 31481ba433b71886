"""The shipped saved objects: structure, references, fields that exist in the mappings, and the
import request the command sends (to a local stand-in HTTP server: no Kibana runs here)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from support.stand_in import reply_json, serving

from esrank.core.errors import EngineError
from esrank.engine import Auth
from esrank.evaluation.dashboards import FILES, import_saved_objects, saved_objects, to_ndjson
from esrank.evaluation.runs import EVAL_MAPPINGS
from esrank.features.parser import load_feature_set

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("flavor", sorted(FILES))
def test_shipped_files_are_current(flavor):
    assert FILES[flavor].read_text() == to_ndjson(saved_objects(flavor)), (
        "run scripts/gen_dashboards.py")


@pytest.mark.parametrize("flavor", sorted(FILES))
def test_every_reference_resolves_and_every_field_exists(flavor):
    objects = [json.loads(line) for line in FILES[flavor].read_text().splitlines()]
    by_id = {o["id"]: o for o in objects}
    assert len(by_id) == len(objects)
    patterns = {o["id"]: o["attributes"]["title"] for o in objects
                if o["type"] == "index-pattern"}
    assert set(patterns.values()) == set(EVAL_MAPPINGS)
    features = set(load_feature_set(ROOT / "feature_sets" / "chorus.yaml").feature_names)
    visualizations = [o for o in objects if o["type"] == "visualization"]
    assert len(visualizations) >= 5
    for vis in visualizations:
        (ref,) = vis["references"]
        assert ref["type"] == "index-pattern" and ref["id"] in patterns
        search = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        assert search["indexRefName"] == ref["name"]
        mapping = EVAL_MAPPINGS[patterns[ref["id"]]]["properties"]
        for agg in json.loads(vis["attributes"]["visState"])["aggs"]:
            field = agg["params"].get("field")
            if field is None:
                continue
            if field.startswith("features."):  # typed by the dynamic template
                assert field.removeprefix("features.") in features, field
            else:
                assert field in mapping, (vis["attributes"]["title"], field)
    dashboards = [o for o in objects if o["type"] == "dashboard"]
    assert [d["attributes"]["title"] for d in dashboards] == [
        "esrank relevance comparison", "esrank online metrics per served model"]
    shown = []
    for dashboard in dashboards:
        panels = json.loads(dashboard["attributes"]["panelsJSON"])
        names = {r["name"]: r["id"] for r in dashboard["references"]}
        assert {p["panelRefName"] for p in panels} == set(names)
        shown += names.values()
    assert sorted(shown) == sorted(v["id"] for v in visualizations)  # each on one dashboard
    assert objects[-1]["type"] == "dashboard"  # imported last


class _Recorder(BaseHTTPRequestHandler):
    answer = {"success": True, "successCount": 10}
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, dict(self.headers), body))
        reply_json(self, 200, self.answer)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stand_in():
    _Recorder.seen = []
    with serving(_Recorder, HTTPServer) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.mark.parametrize("flavor,header", [("kibana", "kbn-xsrf"),
                                           ("opensearch-dashboards", "osd-xsrf")])
def test_import_sends_the_ndjson_to_the_saved_objects_api(stand_in, flavor, header):
    answer = import_saved_objects(stand_in, flavor, Auth(username="elastic", password="pw"))
    assert answer["successCount"] == 10
    (path, headers, body), = _Recorder.seen
    assert path == "/api/saved_objects/_import?overwrite=true"
    assert {k.lower() for k in headers} >= {header, "authorization"}
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="esrank.ndjson"' in body
    assert FILES[flavor].read_bytes() in body


def test_a_refused_import_and_an_absent_server_are_errors(stand_in):
    _Recorder.answer = {"success": False, "errors": [{"id": "x", "error": {"type": "conflict"}}]}
    try:
        with pytest.raises(EngineError, match="conflict"):
            import_saved_objects(stand_in, "kibana")
    finally:
        _Recorder.answer = {"success": True, "successCount": 10}
    with pytest.raises(EngineError, match="cannot reach"):
        import_saved_objects("http://127.0.0.1:9", "kibana", timeout=2)


def test_credentials_in_the_dashboards_url_are_sent_and_never_shown(stand_in):
    import base64

    with_token = stand_in.replace("http://", "http://admin:hunter2@")
    import_saved_objects(with_token, "kibana")
    (_, headers, _), = _Recorder.seen
    sent = {k.lower(): v for k, v in headers.items()}["authorization"]
    assert sent == "Basic " + base64.b64encode(b"admin:hunter2").decode()
    with pytest.raises(EngineError) as err:
        import_saved_objects("http://admin:hunter2@127.0.0.1:9", "kibana", timeout=2)
    assert "hunter2" not in str(err.value) and "admin:***@" not in str(err.value)
