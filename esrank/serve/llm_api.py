"""An OpenAI-compatible chat/completions API over a local GGUF model (`esrank llm serve`):
the packaged SmolLM2 behind the same interface as vLLM or a hosted API, for offline judging
and for testing the endpoint backend against a real model.

Greedy decoding only (`temperature` is accepted and ignored); `logprobs`/`top_logprobs` are
given for the first generated token, the one a judge reads.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from esrank.serve.requests import json_value

MAX_TOKENS = 64
MAX_TOP_LOGPROBS = 20


class RequestError(ValueError):
    """A request the API refuses (400) with the OpenAI error shape."""


def _messages(body: dict) -> tuple[str | None, str]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: expected a non-empty list of {role, content}")
    system, user = None, []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise RequestError(f"messages[{i}]: expected {{role, content}} with string content")
        if m.get("role") == "system" and i == 0:
            system = m["content"]
        elif m.get("role") == "user":
            user.append(m["content"])
        else:
            raise RequestError(f"messages[{i}].role: expected a leading 'system' or 'user', "
                               f"found {m.get('role')!r}")
    if not user:
        raise RequestError("messages: no user message")
    return system, "\n\n".join(user)


def _int(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(f"{name}: expected an integer in {lo}..{hi}, found {value!r}")
    return value


def _body() -> dict:
    """The request's JSON object (RequestError otherwise)."""
    try:
        body = json_value(request.get_data())
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    if not isinstance(body, dict):
        raise RequestError("expected a JSON object body")
    return body


def _logprobs(lm, ids: list[int], first, top: int) -> dict:
    """The first token's log-probability and the `top` likeliest first tokens'."""
    token = ids[0] if ids else int(np.argmax(first))
    best = np.argsort(-first)[:top]
    return {"content": [{
        "token": lm.decode([token]), "logprob": float(first[token]),
        "top_logprobs": [{"token": lm.decode([int(t)]), "logprob": float(first[t])}
                         for t in best]}]}


def create_llm_app(lm) -> Flask:
    """The API over `lm` (an `esrank.models.llm.GgufLlama`, loaded once)."""
    app = Flask(__name__)
    app.extensions["llm"] = lm

    @app.errorhandler(RequestError)
    def _bad(exc):
        return jsonify({"error": {"message": str(exc), "type": "invalid_request_error"}}), 400

    @app.errorhandler(HTTPException)
    def _http(exc):
        return jsonify({"error": {"message": exc.description, "type": exc.name}}), exc.code

    @app.get("/v1/models")
    def models():
        return jsonify({"object": "list", "data": [
            {"id": lm.name, "object": "model", "owned_by": "esrank", "version": lm.version}]})

    @app.post("/v1/chat/completions")
    def chat():
        body = _body()
        system, user = _messages(body)
        max_tokens = _int(body, "max_tokens", 16, 1, MAX_TOKENS)
        top = _int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
        prompt = lm.encode(lm.chat(user, system))
        try:
            ids, first = lm.generate(prompt, max_tokens)
        except ValueError as exc:  # longer than the model's context
            raise RequestError(str(exc)) from exc
        choice = {"index": 0, "message": {"role": "assistant", "content": lm.decode(ids)},
                  "finish_reason": "length" if len(ids) == max_tokens else "stop"}
        if body.get("logprobs"):
            choice["logprobs"] = _logprobs(lm, ids, first, top)
        return jsonify({"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                        "created": int(time.time()), "model": lm.name,
                        "system_fingerprint": lm.version, "choices": [choice],
                        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids),
                                  "total_tokens": len(prompt) + len(ids)}})

    return app
