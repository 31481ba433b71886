"""The LLM judge: scores from answer probabilities, calibration, the endpoint client (against
canned HTTP answers), the grades file, and the local backend over the packaged model."""

from __future__ import annotations

import base64
import json
import math
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from support.stand_in import reply_json, serving

from esrank.core.errors import ConfigError, EsrankError, InputError
from esrank.judgments.lists import Judgment, JudgmentList, read_csv
from esrank.judgments.llm_judge import (
    PROMPTS,
    Calibration,
    LocalBackend,
    MachineGrade,
    OpenAIBackend,
    calibrate,
    expected_grade,
    judge,
    read_grades,
    with_machine_grades,
    write_grades,
)


def test_expected_grade_weights_the_answers_by_probability():
    answers = PROMPTS["grade"].answers
    assert expected_grade({"3": 0.0}, answers) == 3
    assert expected_grade({"0": math.log(0.5), "2": math.log(0.5)}, answers) == pytest.approx(1)
    # renormalised over the labels the model ranked
    assert expected_grade({"1": math.log(0.1), "3": math.log(0.1)}, answers) == pytest.approx(2)
    assert math.isnan(expected_grade({}, answers))


def test_calibration_is_monotone_maps_onto_the_human_scale_and_round_trips(tmp_path):
    scores = [0.1, 0.2, 0.3, 1.5, 1.6, 1.7, 2.5, 2.6]
    human = [0, 0, 1, 2, 1, 2, 3, 3]
    cal = Calibration.fit(scores, human, prompt="grade@x", model="m")
    values = [cal.value(s) for s in np.linspace(0, 3, 31)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert cal.grade(0.15) == 0 and cal.grade(2.55) == 3
    assert math.isnan(cal.value(math.nan))
    cal.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == cal
    (tmp_path / "bad.json").write_text("{\"prompt\": 1}")
    with pytest.raises(InputError, match="bad.json: not a calibration file"):
        Calibration.load(tmp_path / "bad.json")


def _grade(query, doc, grade, score, prompt="grade@x"):
    return MachineGrade(query, doc, grade, score, "m", "v1", prompt)


def test_grades_file_round_trips_and_reads_as_judgments(tmp_path):
    grades = [_grade("usb cable", "1", 3, 2.7), _grade("usb cable", "2", 0, math.nan)]
    path = tmp_path / "llm.csv"
    assert write_grades(grades, path) == 2
    back = read_grades(path)
    assert back[0] == grades[0] and math.isnan(back[1].score)
    assert [(j.doc_id, j.grade) for j in read_csv(path)] == [("1", 3), ("2", 0)]
    (tmp_path / "plain.csv").write_text("query,docid,rating\nq,1,2\n")
    with pytest.raises(InputError, match="plain.csv:1: not a machine-grades file"):
        read_grades(tmp_path / "plain.csv")


def test_calibrate_reports_held_out_agreement_and_refuses_mixed_prompts():
    grades_of = [0, 1, 2, 3, 3, 0]
    human = JudgmentList(tuple(Judgment(q, f"q{q}", f"{q}-{d}", g) for q in "12"
                               for d, g in enumerate(grades_of)))
    # scores order the pairs as people do, but on another scale; raw grades all say 1
    scores = [0.5, 0.9, 1.4, 2.0, 2.2, 0.4]
    grades = [_grade(f"q{q}", f"{q}-{d}", 1, s) for q in "12" for d, s in enumerate(scores)]
    cal, report = calibrate(grades + [_grade("other", "9", 1, 1.0)], human)
    assert (report["pairs"], report["queries"]) == (12, 2)
    # each query is mapped by the calibration the other one fitted: here, exactly
    assert report["calibrated_held_out"]["exact"] == 1.0
    assert report["raw"]["exact"] == pytest.approx(2 / 12)
    assert cal.grade(2.1) == 3 and cal.weighted_kappa == 1.0 and cal.trusted
    with pytest.raises(InputError, match="mix models or prompts"):
        calibrate(grades + [_grade("q1", "1-0", 1, 0.1, prompt="yesno@y")], human)
    with pytest.raises(InputError, match="no scored pair"):
        calibrate([_grade("x", "1", 1, 1.0)], human)
    with pytest.raises(InputError, match="at least 2 queries"):
        calibrate(grades[:6], human)


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with the class's next canned (status, body); keeps the requests and
    their Authorization headers."""

    answers: list = []
    seen: list = []
    auth: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.auth.append(self.headers.get("Authorization"))
        status, body = (self.answers(self.seen[-1]) if callable(self.answers)
                        else self.answers.pop(0))
        reply_json(self, status, body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def canned():
    _Canned.answers, _Canned.seen, _Canned.auth = [], [], []
    with serving(_Canned) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Canned


def _reply(top=None, content="2"):
    choice = {"message": {"role": "assistant", "content": content}}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": content, "logprob": -0.1,
                                           "top_logprobs": top}]}
    return {"model": "served-model", "system_fingerprint": "fp_1", "choices": [choice]}


def test_endpoint_backend_reads_top_logprobs_then_falls_back_to_the_text(canned):
    url, handler = canned
    handler.answers = [(200, _reply([{"token": "3", "logprob": -0.2},
                                     {"token": " 2", "logprob": -1.8},
                                     {"token": "The", "logprob": -2.5}])),
                       (200, _reply(None, content="1 - related")),
                       (200, _reply([{"token": "Sure", "logprob": -0.1}]))]
    backend = OpenAIBackend(url, "served-model", api_key="k")
    grades = list(judge([("usb cable", "1", "Belkin USB cable"), ("usb cable", "2", "Toner"),
                         ("usb cable", "3", "Mouse")], backend))
    assert grades[0].grade == 3
    assert grades[0].score == pytest.approx((3 * math.exp(-0.2) + 2 * math.exp(-1.8))
                                            / (math.exp(-0.2) + math.exp(-1.8)))
    assert (grades[1].grade, grades[1].score) == (1, 1.0)
    assert grades[2].grade == 0 and math.isnan(grades[2].score)  # no label answered
    assert grades[0].model_version == "fp_1" and grades[0].prompt == PROMPTS["grade"].id
    sent = handler.seen[0]
    assert handler.auth[0] == "Bearer k"
    assert sent["max_tokens"] == 1 and sent["logprobs"] is True and sent["temperature"] == 0
    assert "usb cable" in sent["messages"][1]["content"]


def test_tokens_that_are_the_same_label_add_their_probabilities(canned):
    url, handler = canned
    handler.answers = [(200, _reply([{"token": "3", "logprob": math.log(0.5)},
                                     {"token": "0", "logprob": math.log(0.3)},
                                     {"token": " 3", "logprob": math.log(0.1)}]))]
    logprobs = OpenAIBackend(url, "m").answer_logprobs("s", "u", ["0", "3"])
    assert logprobs["3"] == pytest.approx(math.log(0.6))
    assert logprobs["0"] == pytest.approx(math.log(0.3))


def test_concurrent_requests_keep_each_grade_with_its_pair(canned):
    url, handler = canned
    # the endpoint answers the product's number of words, mod 4
    handler.answers = staticmethod(lambda body: (200, _reply(None, content=str(
        len(body["messages"][1]["content"].split("Product: ")[1].split("\n")[0].split()) % 4))))
    pairs = [("q", str(i), " ".join(["w"] * i)) for i in range(1, 13)]
    grades = list(judge(pairs, OpenAIBackend(url, "m"), workers=4))
    assert [g.doc_id for g in grades] == [str(i) for i in range(1, 13)]
    assert [g.grade for g in grades] == [i % 4 for i in range(1, 13)]


def test_a_calibration_of_another_prompt_or_model_is_refused(canned):
    url, handler = canned
    handler.answers = [(200, _reply(None, content="2"))]
    backend = OpenAIBackend(url, "m")
    pair = [("q", "1", "text")]
    other_prompt = Calibration.fit([0.0, 3.0], [0, 3], prompt=PROMPTS["yesno"].id,
                                   model="served-model")
    with pytest.raises(InputError, match="fitted on prompt yesno@"):
        list(judge(pair, backend, calibration=other_prompt))
    other_model = Calibration.fit([0.0, 3.0], [0, 3], prompt=PROMPTS["grade"].id, model="x")
    with pytest.raises(InputError, match="fitted on model x, and served-model answered"):
        list(judge(pair, backend, calibration=other_model))


def test_endpoint_errors_are_clear(canned):
    url, handler = canned
    handler.answers = [(400, {"error": {"message": "model not found"}})]
    with pytest.raises(EsrankError, match="HTTP 400: .*model not found"):
        OpenAIBackend(url, "m").answer_logprobs("s", "u", ["0"])
    handler.answers = [(200, {"choices": []})]
    with pytest.raises(EsrankError, match="unexpected reply"):
        OpenAIBackend(url, "m").answer_logprobs("s", "u", ["0"])
    with pytest.raises(EsrankError, match="unreachable"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", retries=0).answer_logprobs("s", "u", ["0"])


@pytest.mark.parametrize("userinfo, shown", [("user:hunter2", "user:***"), ("hunter2", "***")])
def test_endpoint_credentials_go_as_basic_auth_and_never_show(canned, userinfo, shown):
    url, handler = canned
    handler.answers = [(200, _reply(None, content="2"))]
    OpenAIBackend(url.replace("://", f"://{userinfo}@"), "m").answer_logprobs("s", "u", ["2"])
    basic = userinfo if ":" in userinfo else f"{userinfo}:"  # a username alone, as curl reads it
    assert handler.auth == [f"Basic {base64.b64encode(basic.encode()).decode()}"]
    with pytest.raises(EsrankError, match="unreachable") as err:
        OpenAIBackend(f"http://{userinfo}@127.0.0.1:9/v1", "m", retries=0).answer_logprobs(
            "s", "u", ["0"])
    assert f"http://{shown}@127.0.0.1:9/v1/chat/completions" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_an_unusable_endpoint_is_a_config_error_without_its_secret():
    with pytest.raises(ConfigError, match=r"the URL http://user:\*\*\*@localhost:abc/v1 has no "
                                          "valid host and port"):
        OpenAIBackend("http://user:hunter2@localhost:abc/v1", "m")
    with pytest.raises(ConfigError, match="carries credentials, and a username, password or "
                                          "API key is set as well"):
        OpenAIBackend("http://user:hunter2@localhost:8000/v1", "m", api_key="k")


def test_local_backend_grades_with_provenance(llm):
    backend = LocalBackend(llm)
    grade = next(judge([("usb cable", "42", "Belkin USB 2.0 cable, 3 m")], backend))
    assert grade.grade in range(4) and 0 <= grade.score <= 3
    assert (grade.model, grade.model_version) == (llm.name, llm.version)
    labels = backend.answer_logprobs("s", "Say a digit.", ["0", "1", "2", "3"])
    assert set(labels) == {"0", "1", "2", "3"} and all(lp < 0 for lp in labels.values())


def test_local_backend_adds_the_labels_spelt_with_a_space():
    """'3' and ' 3' are one answer, as for an endpoint: their probabilities add up."""

    class Vocab:
        texts = ["0", "3", " 3", "x", " 0 "]

        def get_vocab(self):
            return {t: i for i, t in enumerate(self.texts)}

    class Lm:
        name, version, tokenizer = "toy", "1", Vocab()

        def encode(self, text):
            return [Vocab.texts.index(text)] if text in Vocab.texts else [3, 3]

        def decode(self, ids):
            return "".join(Vocab.texts[i] for i in ids)

        def chat(self, user, system):
            return "x"

        def next_token_logprobs(self, ids):
            return np.log(np.array([0.1, 0.2, 0.3, 0.25, 0.15]))

    labels = LocalBackend(Lm()).answer_logprobs("s", "u", ["0", "3"])
    assert labels == pytest.approx({"0": np.log(0.25), "3": np.log(0.5)})
    with pytest.raises(ConfigError, match="labels must be single tokens"):
        LocalBackend(Lm()).answer_logprobs("s", "u", ["33"])


def test_machine_grades_fill_only_pairs_no_person_judged():
    human = JudgmentList((Judgment("1", "usb cable", "a", 3),
                          Judgment("1", "usb cable", "b", 0)), source="human.csv")
    merged = with_machine_grades(human, [_grade("usb cable", "b", 3, 2.9),  # a person judged b
                                         _grade("usb cable", "c", 2, 2.0),
                                         _grade("usb cable", "c", 1, 1.0),  # first one kept
                                         _grade("mouse", "d", 3, 3.0)])  # not a judged query
    assert [(j.qid, j.doc_id, j.grade) for j in merged] == [("1", "a", 3), ("1", "b", 0),
                                                            ("1", "c", 2)]
    assert merged.source == "human.csv + machine"


class _Fixed:
    """A judge answering every pair with the same label."""

    model, version = "fixed", "1"

    def answer_logprobs(self, system, user, labels):
        return {labels[-1]: 0.0}


def test_a_judging_run_grades_the_first_pairs_and_reports_what_it_could_not(tmp_path):
    from esrank.judgments.judging import judge_into

    todo = [("usb cable", "1", "Belkin USB cable"), ("usb cable", "2", "HDMI cable"),
            ("mouse", "3", "Logitech mouse")]
    report = judge_into(todo, ["9"], _Fixed, tmp_path / "grades.csv", limit=2)
    assert report.to_dict() == {"graded": 2, "output": str(tmp_path / "grades.csv"),
                                "model": "fixed", "model_version": "1",
                                "prompt": PROMPTS["grade"].id, "calibration": None,
                                "not_in_index": ["9"]}
    assert [(g.doc_id, g.grade) for g in read_grades(tmp_path / "grades.csv")] == [("1", 3),
                                                                                  ("2", 3)]


def test_a_judging_run_with_no_product_in_the_index_is_refused_before_the_judge_loads(tmp_path):
    from esrank.judgments.judging import judge_into

    def never():
        raise AssertionError("the judge was built")

    with pytest.raises(InputError, match=r"none of the 2 products to judge is in index "
                                         r"products \(e.g. 7, 8\): is ESRANK_INDEX right"):
        judge_into([], ["7", "8"], never, tmp_path / "grades.csv", index="products")
    assert not (tmp_path / "grades.csv").exists()
