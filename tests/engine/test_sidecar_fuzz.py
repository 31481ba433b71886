"""The property pass over the sidecar's spec with a live engine and an active model: every
route reaches the code behind it (ranking, rescoring, comparison, explanations), and no
request, valid or not, gets a server error. (tests/serve/test_fuzz.py covers the same spec
with the engine gone.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.chorus_slice import write_slice_judgments
from support.cleanup import remove_deployed
from support.fuzzing import fuzz
from support.loops import log_loop, private_feature_set

from esrank.judgments.lists import read_judgments
from esrank.learn.train import TrainParams
from esrank.serve import create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live_app(engine, encoder, slice_alias, engine_settings_factory, tmp_path_factory):
    """A sidecar over the slice with an active model and judgments."""
    tmp = tmp_path_factory.mktemp("fuzz")
    judgments = write_slice_judgments(tmp / "j.csv")
    fs = private_feature_set(ROOT / "feature_sets" / "chorus.yaml", "fuzz")
    chain = log_loop(engine, encoder, slice_alias, fs, read_judgments(judgments), tmp)
    chain = chain.trained(tmp / "m", device="cpu", params=TrainParams(num_rounds=20))
    assert chain.deploy(engine).activated
    yield create_app(engine_settings_factory(index=slice_alias, active_set=fs.name,
                                             judgments=judgments), encoder=encoder)
    remove_deployed(engine, fs.name)


def test_no_request_gets_a_server_error_with_a_live_engine(live_app):
    # 501 is the documented "no cross-encoder configured"; any other 5xx is a defect
    seen = fuzz(live_app, 25, lambda status: status < 500 or status == 501)
    assert len(seen) > 100 and 200 in seen  # the routes ran, not only their refusals
