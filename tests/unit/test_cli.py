"""The CLI as a user runs it: exit codes 0 / 1 (esrank error) / 2 (usage), clear messages."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.stand_in import black_hole

ROOT = Path(__file__).resolve().parent.parent.parent
BAD = ROOT / "tests" / "data" / "feature_sets" / "bad"


def esrank(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esrank.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=timeout)


def test_validate_ok_and_json():
    ok = esrank("features", "validate", "--json")
    assert ok.returncode == 0, ok.stderr
    assert '"engine_name": "chorus@' in ok.stdout


def test_malformed_feature_file_exits_1_naming_file_line_and_feature():
    bad = esrank("features", "validate", str(BAD / "unknown_param.yaml"))
    assert bad.returncode == 1
    assert "unknown_param.yaml:" in bad.stderr and "feature '" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_usage_error_exits_2():
    assert esrank("features", "validate", "--bogus").returncode == 2


def test_engine_down_exits_1_and_changes_nothing(tmp_path):
    down = esrank("features", "push", ESRANK_URL="http://127.0.0.1:9", ESRANK_TIMEOUT="2")
    assert down.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in down.stderr
    idx = esrank("index", str(ROOT / "tests" / "data" / "chorus_slice.jsonl"),
                 ESRANK_URL="http://127.0.0.1:9", ESRANK_TIMEOUT="2")
    assert idx.returncode == 1 and "cannot reach" in idx.stderr


def test_index_refuses_negative_counts_before_touching_the_engine():
    slice_ = str(ROOT / "tests" / "data" / "chorus_slice.jsonl")
    for option in (["--keep", "-1"], ["--allow-rejects", "-1"], ["--max-shrink", "101"]):
        run = esrank("index", slice_, *option, ESRANK_URL="http://127.0.0.1:9")
        assert run.returncode == 2 and f"Invalid value for '{option[0]}'" in run.stderr


@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_an_engine_that_does_not_answer_exits_1_with_one_line(flavor):
    with black_hole() as url:
        run = esrank("search", "tv", ESRANK_URL=url, ESRANK_FLAVOR=flavor, ESRANK_TIMEOUT="1")
    assert run.returncode == 1, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("error: ") and f"no answer from {url} within 1 s (timed out)" in line


@pytest.mark.parametrize("env", [
    {"ESRANK_URL": "elastic:hunter2@127.0.0.1:9"},  # no scheme
    {"ESRANK_URL": "https://hunter2@127.0.0.1:9", "ESRANK_FLAVOR": "opensearch"},
    {"ESRANK_URL": "https://hunter2@127.0.0.1:9", "ESRANK_FLAVOR": "elasticsearch"},
    {"ESRANK_URL": "http://elastic:hunter2@127.0.0.1:abc"},
    {"ESRANK_LLM__ENDPOINT": "hunter2@127.0.0.1:8000/v1"},
], ids=["no-scheme", "token-opensearch", "token-elasticsearch", "port", "llm-endpoint"])
def test_odd_urls_exit_1_with_one_line_and_never_show_their_secret(env):
    run = esrank("search", "tv", ESRANK_TIMEOUT="2", **env)
    assert run.returncode == 1, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("error: ") and "***@127.0.0.1:" in line
    assert "hunter2" not in run.stdout + run.stderr


def test_bad_setting_is_a_config_error():
    bad = esrank("features", "validate", ESRANK_ENGINE__OPENSEARCH__PORT="ninety")
    assert bad.returncode == 1 and "engine.opensearch.port" in bad.stderr
    typo = esrank("features", "validate", ESRANK_ENGINE__ELASTICSEARCH__PROT="9201")
    assert typo.returncode == 1 and "engine.elasticsearch.prot" in typo.stderr


def test_cli_reference_doc_is_current():
    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_cli_docs import DOC, render

    assert DOC.read_text() == render(), "docs/cli.md is stale: run scripts/gen_cli_docs.py"


def test_judgments_agree_json(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    # a: 1,1,0,0  b: 1,0,0,0 -> po = 3/4, pe = (2/4*1/4 + 2/4*3/4) = 1/2, kappa = 0.5
    a.write_text("query,docid,rating\nq,d1,1\nq,d2,1\nq,d3,0\nq,d4,0\n")
    b.write_text("query,docid,rating\nq,d1,1\nq,d2,0\nq,d3,0\nq,d4,0\nq,d9,2\n")
    run = esrank("judgments", "agree", str(a), str(b), "--json")
    assert run.returncode == 0, run.stderr
    import json

    report = json.loads(run.stdout)
    assert report["n"] == 4 and abs(report["kappa"] - 0.5) < 1e-9
    assert abs(report["per_query"]["q"]["exact"] - 0.75) < 1e-9


def test_judgments_conflict_exits_1_naming_lines():
    run = esrank("judgments", "agree", str(ROOT / "tests/data/judgments/conflict.csv"),
                 str(ROOT / "tests/data/judgments/small.csv"))
    assert run.returncode == 1 and "conflict.csv:" in run.stderr


def test_judgments_from_clicks_writes_graded_csv(tmp_path):
    out = tmp_path / "new" / "folder" / "clicks.csv"  # output folders are created
    log = ROOT / "tests" / "data" / "ubi_esci_sample" / "ubi_queries_events.ndjson"
    run = esrank("judgments", "from-clicks", str(log), "--min-impressions", "1", "-o", str(out))
    assert run.returncode == 0, run.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "query,docid,rating" and len(rows) > 100
    assert {r.rsplit(",", 1)[1] for r in rows[1:]} <= {"0", "1", "2", "3"}
    (tmp_path / "file").write_text("")
    blocked = esrank("judgments", "from-clicks", str(log), "-o", str(tmp_path / "file" / "x.csv"))
    assert blocked.returncode == 2 and "cannot create the folder of" in blocked.stderr


def test_deleting_a_model_needs_yes():
    refused = esrank("models", "delete", "chorus-v1", ESRANK_URL="http://127.0.0.1:9")
    assert refused.returncode == 2 and "--yes" in refused.stderr


def test_upload_of_a_broken_artifact_names_it_and_touches_no_engine(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "model.json").write_text("{}")
    bad = esrank("upload", str(tmp_path), ESRANK_URL="http://127.0.0.1:9")
    assert bad.returncode == 1
    assert f"{tmp_path / 'meta.json'}: field 'feature_set' is missing" in bad.stderr
    assert "cannot reach" not in bad.stderr  # refused before any request


def test_index_without_files_is_a_usage_error_that_names_the_demo_catalogue():
    run = esrank("index", ESRANK_URL="http://127.0.0.1:9")
    assert run.returncode == 2 and "no product files given" in run.stderr
    named = run.stderr.split("esrank index ", 1)[1].split("/*.json.zip")[0]
    assert sorted(p.name for p in Path(named).glob("*.json.zip")) == [
        "1.json.zip", "2.json.zip", "3.json.zip", "4.json.zip"]  # the catalogue ships inside


def test_serving_beyond_loopback_needs_a_token():
    open_ = esrank("serve", "--host", "0.0.0.0", ESRANK_URL="http://127.0.0.1:9")
    assert open_.returncode == 2 and "ESRANK_SERVE__TOKEN" in open_.stderr


@pytest.mark.parametrize("token", ["", "  "])
def test_an_empty_token_is_refused_before_serving(token):
    # it used to pass the bind guard (token set) and turn authentication off (token falsy):
    # the sidecar started on every interface; the timeout stops such a start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = esrank("serve", "--host", "0.0.0.0", "--port", port, timeout=20,
                 ESRANK_URL="http://127.0.0.1:9", ESRANK_SERVE__TOKEN=token)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "ESRANK_SERVE__TOKEN is empty" in run.stderr and "esrank sidecar on" not in run.stdout


def test_the_docker_context_leaves_local_config_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"esrank.toml", ".env", "*.parquet", ".venv"} <= set(ignored)


def test_encoder_info_follows_the_settings_and_the_cache_lists_and_clears(tmp_path):
    import json

    home = {"ESRANK_HOME": str(tmp_path)}
    info = esrank("encoder", "info", "--json", ESRANK_ENCODER__BACKEND="numpy", **home)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["encoder"].startswith("numpy:") and data["key"].endswith(":fp32")
    assert "numpy" in data["installed_backends"]
    bad = esrank("encoder", "info", ESRANK_ENCODER__PRECISION="fp8", **home)
    assert bad.returncode == 1 and "encoder.precision" in bad.stderr

    from esrank.models.embed_cache import EmbeddingCache

    EmbeddingCache(tmp_path / "cache").put("m:1:fp32", ["a", "b"], [[1.0, 0.0]] * 2)
    listed = json.loads(esrank("encoder", "cache", "--json", **home).stdout)
    assert listed["entries"] == {"m:1:fp32": 2}
    cleared = json.loads(esrank("encoder", "cache", "--clear", "--json", **home).stdout)
    assert cleared["cleared"] == 2
    assert json.loads(esrank("encoder", "cache", "--json", **home).stdout)["entries"] == {}


def test_a_missing_extra_is_named_with_its_install_command():
    code = ("import sys; sys.modules['waitress'] = None; sys.argv = ['esrank', 'serve']; "
            "from esrank.cli import main; main()")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "this command needs waitress: pip install 'esrank[serve]'" in run.stderr


def test_json_output_is_strict_json_with_missing_values_as_null(capsys):
    import json
    import math

    from esrank.cli.common import emit

    emit({"features": {"price": math.nan, "recency": 0.5}, "worst": [math.inf, 1.0]}, True, "")
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    assert json.loads(out) == {"features": {"price": None, "recency": 0.5},
                               "worst": [None, 1.0]}
