"""A faked HTTP transport for unit tests (the real engine is exercised in tests/engine)."""

from __future__ import annotations

from esrank.errors import EngineError


class FakeTransport:
    """Answers (method, path) with canned JSON or an EngineError, and records every request."""

    flavor = "fake"

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def request(self, operation, method, path, *, body=None, params=None, target=None):
        self.calls.append((method, path, body, params))
        answer = self.answers.get((method, path))
        if isinstance(answer, EngineError):
            raise answer
        return answer
