"""Feature drift through the plugin, on both engines: the loop's model deployed (not
activated), its reference bins carried into the registry, and live samples logged by the
plugin over its served top 10: the training traffic (another sample of it) stays under the
alert level, a traffic shift the training never saw (shoppers searching brand names) raises
it, in the library and in `esrank monitor drift`'s exit code."""

from __future__ import annotations

import json
import random

import pytest
from support.cleanup import remove_deployed

from esrank.app import App
from esrank.deploy.registry import entry
from esrank.monitoring.drift import check_drift

SHIFTED = ["HP", "StarTech.com", "Philips", "C2G", "Canon", "Epson", "Intel", "APC",
           "Xerox", "HERMA", "OKI", "Tripp Lite", "Lexmark", "Kensington", "Brother"]


@pytest.fixture(scope="module")
def drift_app(engine, encoder, loop, engine_settings_factory):
    """An App on the loop's alias and feature set, with the loop's model deployed (inactive);
    undeployed after, so other tests find the loop as it was (nothing deployed)."""
    report = loop.deploy(engine, activate=False)
    assert report.parity.passed
    settings = engine_settings_factory(index=loop.alias, active_set=loop.feature_set.name)
    yield App(settings, engine=engine, encoder=encoder), report.model
    remove_deployed(engine, loop.feature_set.name)


def test_the_registry_keeps_the_reference_bins(engine, loop, drift_app):
    _, model = drift_app
    stored = entry(engine, loop.feature_set.name).deployed(model).meta["reference"]
    assert stored == loop.artifact.meta["reference"]
    assert stored["top"] == 10 and "recency" not in stored["features"]  # excluded: not binned


def test_a_stable_sample_stays_under_the_alert_and_a_shift_raises_it(loop, drift_app):
    app, model = drift_app
    queries = sorted(set(loop.table.queries))
    stable = random.Random(11).sample(queries, 3 * len(queries) // 4)
    calm = check_drift(app, stable, model)
    assert calm.rows > 5 * len(stable) and calm.degraded == 0
    assert calm.alerting == [] and calm.max_psi < 0.2, calm.to_dict()
    shifted = check_drift(app, SHIFTED, model)
    assert shifted.alerting and shifted.max_psi >= 0.2, shifted.to_dict()
    assert shifted.features[0].psi == shifted.max_psi  # sorted, highest first


def test_monitor_drift_exits_3_on_the_shift(tmp_path, cli_env, loop, drift_app):
    from click.testing import CliRunner

    from esrank.cli import cli

    _, model = drift_app
    path = tmp_path / "shifted.txt"
    path.write_text("\n".join(SHIFTED) + "\n")
    env = {**cli_env, "ESRANK_INDEX": loop.alias, "ESRANK_ACTIVE_SET": loop.feature_set.name}
    out = CliRunner().invoke(cli, ["monitor", "drift", "--model", model, "--queries",
                                   str(path), "--json"], env=env)
    assert out.exit_code == 3, out.output
    assert json.loads(out.output)["alerting"]


def test_the_sidecar_gauge_flags_the_shift(engine, encoder, loop, drift_app):
    """Every search sampled (ESRANK_SERVE__DRIFT_SAMPLE=1): the shifted traffic's PSI in
    /metrics is past the alert level, and the answers carry no features nobody asked for."""
    from esrank.serve import create_app

    app, model = drift_app
    serve = app.settings.serve.model_copy(update={"drift_sample": 1.0, "ubi": False})
    client = create_app(app.settings.model_copy(update={"serve": serve}), encoder=encoder,
                        engine=engine).test_client()
    for query in SHIFTED:
        answer = client.post("/search", json={"query": query, "model": model})
        assert answer.status_code == 200 and "features" not in answer.json
    metrics = client.get("/metrics").get_data(as_text=True)
    psi = {line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
           for line in metrics.splitlines() if line.startswith("esrank_feature_psi{")}
    direct = check_drift(app, SHIFTED, model)
    assert psi == pytest.approx({d.feature: d.psi for d in direct.features})
    assert max(psi.values()) >= 0.2
