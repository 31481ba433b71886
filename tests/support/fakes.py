"""A faked HTTP transport for unit tests (the real engine is exercised in tests/engine)."""

from __future__ import annotations

import json

from esrank.core.errors import EngineError


class FakeTransport:
    """Answers (method, path) with canned JSON, an EngineError, or what a callable returns for
    the request body; records every request."""

    def __init__(self, answers, flavor: str = "opensearch"):
        self.answers = answers
        self.flavor = flavor
        self.calls = []

    def request(self, operation, method, path, *, body=None, params=None, target=None):
        self.calls.append((method, path, body, params))
        answer = self.answers.get((method, path))
        if callable(answer):
            answer = answer(body)
        if isinstance(answer, EngineError):
            raise answer
        return answer


def searches(body: str) -> list[dict]:
    """The search bodies of one _msearch request (ndjson: header, body, header, body...)."""
    return [json.loads(line) for line in body.strip().split("\n")][1::2]


def msearch_answering(response: dict):
    """An _msearch answer: `response` for every search of the request."""
    return lambda body: {"responses": [response for _ in searches(body)]}
