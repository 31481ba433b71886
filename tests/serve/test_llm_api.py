"""The OpenAI-compatible API over the packaged model (`esrank llm serve`), through Flask's
test client: the answer's shape, its logprobs, and refused requests."""

from __future__ import annotations

import re

import numpy as np
import pytest

from esrank.serve.llm_api import create_llm_app


@pytest.fixture()
def client(llm):
    return create_llm_app(llm).test_client()


def test_chat_completion_answers_with_first_token_logprobs(client, llm):
    body = {"model": "any", "max_tokens": 12, "logprobs": True, "top_logprobs": 5,
            "messages": [{"role": "system", "content": "You answer briefly."},
                         {"role": "user", "content": "What is the capital of France?"}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    data = r.get_json()
    choice = data["choices"][0]
    assert "Paris" in choice["message"]["content"] or choice["finish_reason"] == "length"
    first = choice["logprobs"]["content"][0]
    top = first["top_logprobs"]
    assert len(top) == 5 and top == sorted(top, key=lambda t: -t["logprob"])
    assert first["token"] == top[0]["token"]  # greedy: the likeliest token
    want = llm.next_token_logprobs(llm.encode(llm.chat("What is the capital of France?",
                                                       "You answer briefly.")))
    assert abs(top[0]["logprob"] - float(np.max(want))) < 1e-6
    assert data["model"] == llm.name and data["system_fingerprint"] == llm.version
    assert data["usage"]["completion_tokens"] <= 12


def test_models_lists_the_served_model(client, llm):
    assert client.get("/v1/models").get_json()["data"][0]["id"] == llm.name


@pytest.mark.parametrize("body, message", [
    ({}, "messages: expected a non-empty list"),
    ({"messages": [{"role": "user"}]}, r"messages\[0\]: expected"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, r"messages\[0\].role"),
    ({"messages": [{"role": "system", "content": "x"}]}, "no user message"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x " * 9000}]}, "exceed the context"),
])
def test_bad_requests_are_400_with_the_field(client, body, message):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.get_json()["error"]["type"] == "invalid_request_error"
    assert re.search(message, r.get_json()["error"]["message"])


def test_a_body_that_is_not_json_is_400(client):
    r = client.post("/v1/chat/completions", data="no", content_type="text/plain")
    assert r.status_code == 400


@pytest.mark.parametrize("raw, message", [
    (b'{"messages": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
     r"messages\[0\].content holds a lone surrogate"),
])
def test_deep_or_non_unicode_json_is_400(client, raw, message):
    r = client.post("/v1/chat/completions", data=raw, content_type="application/json")
    assert r.status_code == 400 and re.search(message, r.get_json()["error"]["message"])
