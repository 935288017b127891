"""Hostile HTTP requests to `zhllama serve` (issue 18): every client mistake is a 4xx in OpenAI's
error shape naming the field, never a 500, streamed or not; the server keeps answering after."""

from __future__ import annotations

import json
import re

import pytest

U = [{"role": "user", "content": "你好"}]
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"

# (id, path, body (object, or bytes sent as is), status, param named in the error, message regex)
HTTP_CASES = [
    ("seed-2**64", CHAT, {"messages": U, "seed": 2**64}, 400, "seed", r"seed"),
    ("seed-2**64-stream", CHAT, {"messages": U, "seed": 2**64, "stream": True}, 400, "seed", r"seed"),
    ("system-only", CHAT, {"messages": [{"role": "system", "content": "只有系统"}]}, 400, "messages", r"user"),
    (
        "system-only-stream",
        CHAT,
        {"messages": [{"role": "system", "content": "只有系统"}], "stream": True},
        400,
        "messages",
        r"user",
    ),
    (
        "lone-surrogate-chat",
        CHAT,
        {"messages": [{"role": "user", "content": "a\ud800b"}]},
        400,
        "messages[0].content",
        r"surrogate",
    ),
    (
        "lone-surrogate-completion-stream",
        COMPLETIONS,
        {"prompt": "a\ud800", "stream": True},
        400,
        "prompt",
        r"surrogate",
    ),
    ("model-is-number", CHAT, {"model": 5, "messages": U}, 400, "model", r"string"),
    ("model-unknown", CHAT, {"model": "gpt-9", "messages": U}, 404, "model", r"gpt-9"),
    ("messages-not-array", CHAT, {"messages": "hi"}, 400, "messages", r"array"),
    ("messages-empty", CHAT, {"messages": []}, 400, "messages", r"array"),
    ("turn-not-object", CHAT, {"messages": ["hi"]}, 400, "messages[0]", r"object"),
    ("role-unknown", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role", r"wizard"),
    ("content-missing", CHAT, {"messages": [{"role": "user"}]}, 400, "messages[0].content", r"null"),
    ("max-tokens-negative", CHAT, {"messages": U, "max_tokens": -1}, 400, "max_tokens", r"-1"),
    ("max-tokens-over-limit", CHAT, {"messages": U, "max_tokens": 10**9}, 400, "max_tokens", r"64"),
    ("temperature-string", CHAT, {"messages": U, "temperature": "hot"}, 400, "temperature", r"number"),
    ("temperature-negative", CHAT, {"messages": U, "temperature": -1}, 400, "temperature", r"temperature"),
    ("stop-not-strings", CHAT, {"messages": U, "stop": [1, 2]}, 400, "stop", r"string"),
    ("n-zero", CHAT, {"messages": U, "n": 0}, 400, "n", r"\bn\b"),
    ("prompt-missing", COMPLETIONS, {}, 400, "prompt", r"prompt"),
    ("prompt-number", COMPLETIONS, {"prompt": 5}, 400, "prompt", r"prompt"),
    ("body-not-object", CHAT, [1, 2], 400, None, r"JSON object"),
    ("body-not-json", CHAT, b"{not json", 400, None, r"JSON"),
    ("body-not-utf8", CHAT, b'{"messages": "\xff"}', 400, None, r"utf-8|UTF-8"),
]


@pytest.fixture(scope="module")
def client(tiny_zh_model):
    from fastapi.testclient import TestClient

    from zhllama.core.engine import GenerationParams, open_model
    from zhllama.core.generation.runtime import ChatRuntime
    from zhllama.core.templates import get_template
    from zhllama.server import ServerLimits, create_app

    model = open_model(tiny_zh_model)
    runtime = ChatRuntime(model, get_template("llama2-zh"), "tiny-zh")
    app = create_app(runtime, GenerationParams(max_new_tokens=4), limits=ServerLimits(max_tokens=64))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    model.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "pattern"), [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES]
)
def test_bad_request_is_a_4xx_in_openai_shape(client, path, body, status, param, pattern):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # ASCII: lone surrogates stay \\ud800
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert re.search(pattern, error["message"]), error["message"]
    ok = client.post(CHAT, json={"messages": U, "max_tokens": 1})  # the server still serves
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 1


def test_a_failure_after_the_stream_started_is_an_error_event_then_done(tiny_zh_model, monkeypatch):
    """Headers are gone once streaming starts: the failure must arrive as an SSE error event,
    followed by [DONE], never as a cut connection."""
    from fastapi.testclient import TestClient

    from zhllama.core.engine import GenerationParams, open_model
    from zhllama.core.generation import batch, respond
    from zhllama.core.generation.runtime import ChatRuntime
    from zhllama.core.templates import get_template
    from zhllama.server import create_app

    real_iter = respond.Reply.__iter__

    def fail_after_first_chunk(self):
        for chunk in real_iter(self):
            yield chunk
            raise RuntimeError("device lost")

    def lose_device(self):  # the batched path (continuous batching): the step after the first token fails
        raise RuntimeError("device lost")

    monkeypatch.setattr(respond.Reply, "__iter__", fail_after_first_chunk)  # the one-reply path
    monkeypatch.setattr(batch.DecodeBatch, "forward", lose_device)
    model = open_model(tiny_zh_model)
    try:
        app = create_app(ChatRuntime(model, get_template("llama2-zh"), "tiny-zh"), GenerationParams(max_new_tokens=8))
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post(CHAT, json={"messages": U, "stream": True})
    finally:
        model.close()
    assert response.status_code == 200
    events = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "device lost" in error["message"]
    assert any("choices" in json.loads(e) for e in events[:-2])  # the stream had started
