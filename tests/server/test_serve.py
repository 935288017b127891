"""`zhllama serve`: the official openai client against a live uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import get_template
from zhllama.server import ServerLimits, create_app

NAME = "tiny-zh"
KEY = "sekret"


@pytest.fixture(scope="module")
def runtime(served_model):
    return ChatRuntime(served_model, get_template("llama2-zh"), NAME)


@pytest.fixture(scope="module")
def server_url(runtime, live_server):
    app = create_app(
        runtime,
        GenerationParams(max_new_tokens=16),
        api_key=None,
        limits=ServerLimits(max_tokens=64, max_request_bytes=4096),
    )
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server_url):
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=60)


MESSAGES = [{"role": "user", "content": "你好，请介绍一下北京。"}]


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_chat_greedy_equals_chat_prompt_cli(client, run_cli, tiny_zh_model):
    response = client.chat.completions.create(model=NAME, messages=MESSAGES, temperature=0, max_tokens=12)
    code, out, _err = run_cli(
        "chat", "--model", tiny_zh_model, "--greedy", "--max-new-tokens", "12", "--prompt", MESSAGES[0]["content"]
    )
    assert code == 0
    assert response.choices[0].message.content == out[:-1]  # the CLI ends the answer with a newline
    assert response.choices[0].message.role == "assistant"
    assert response.usage.completion_tokens == 12 and response.choices[0].finish_reason == "length"
    assert response.usage.prompt_tokens == len(client_prompt_ids(tiny_zh_model))
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def client_prompt_ids(model_dir):
    from zhllama.core.templates import Message, encode
    from zhllama.core.tokenizer import ZhTokenizer

    template = get_template("llama2-zh")
    return encode(ZhTokenizer(model_dir), template.segments([Message("user", MESSAGES[0]["content"])]))[0]


def test_chat_stream_equals_non_stream_and_ends_with_done(client, server_url):
    full = client.chat.completions.create(model=NAME, messages=MESSAGES, temperature=0, max_tokens=10)
    chunks = list(
        client.chat.completions.create(model=NAME, messages=MESSAGES, temperature=0, max_tokens=10, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    parts = [{"role": "user", "content": [{"type": "text", "text": MESSAGES[0]["content"]}]}]
    as_parts = client.chat.completions.create(model=NAME, messages=parts, temperature=0, max_tokens=10)
    assert as_parts.choices[0].message.content == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    raw = httpx.post(
        f"{server_url}/v1/chat/completions",
        json={"messages": MESSAGES, "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][len("data: ") :])["usage"]["completion_tokens"] == 3


def test_completions_and_stop_and_seed(client):
    plain = client.completions.create(model=NAME, prompt="北京是", temperature=0, max_tokens=12)
    text = plain.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model=NAME, prompt="北京是", temperature=0, max_tokens=12, stream=True)
    )
    assert streamed == text and len(text) > 3
    stop = text[2:4]
    cut = client.completions.create(model=NAME, prompt="北京是", temperature=0, max_tokens=12, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    a = client.completions.create(model=NAME, prompt="北京是", temperature=1.0, max_tokens=8, seed=5).choices[0].text
    b = client.completions.create(model=NAME, prompt="北京是", temperature=1.0, max_tokens=8, seed=5).choices[0].text
    assert a == b


def test_bad_requests_get_openai_errors(client, server_url):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4", messages=[])  # the model is checked first
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=100000)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=NAME, messages=[])
    with pytest.raises(openai.BadRequestError, match="two user messages"):
        client.chat.completions.create(model=NAME, messages=MESSAGES + MESSAGES)
    raw = httpx.post(
        f"{server_url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    raw = httpx.post(f"{server_url}/v1/completions", content=b"x" * 5000)
    assert raw.status_code == 413 and raw.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{server_url}/v1/nope").json()["error"]["type"] == "invalid_request_error"


def test_api_key(runtime, live_server):
    app = create_app(runtime, GenerationParams(max_new_tokens=4), api_key=KEY)
    with live_server(app) as url:
        good = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        assert [m.id for m in good.models.list().data] == [NAME]
        assert good.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "a"}).status_code == 401


def test_concurrent_requests_queue_and_match_sequential(client, server_url):
    expected = [
        client.completions.create(model=NAME, prompt=p, temperature=0, max_tokens=10).choices[0].text
        for p in ("北京", "上海", "广州")
    ]

    async def burst():
        async with openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="x", max_retries=0) as aclient:
            calls = [
                aclient.completions.create(model=NAME, prompt=p, temperature=0, max_tokens=10)
                for p in ("北京", "上海", "广州")
            ]
            return [r.choices[0].text for r in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == expected


@pytest.mark.slow
def test_serve_command_end_to_end(tiny_zh_model, free_port):
    """`zhllama serve` as users start it: loopback, API key, model id from the folder name."""
    import os
    import subprocess
    import sys

    port = free_port()
    cmd = [sys.executable, "-m", "zhllama", "serve", "-m", str(tiny_zh_model), "--port", str(port), "--api-key", KEY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=30)
        deadline = time.monotonic() + 90
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stderr.read() if proc.poll() else "timeout"
                )
                time.sleep(0.2)
        assert [m.id for m in models.data] == [tiny_zh_model.name]
        reply = client.chat.completions.create(model=tiny_zh_model.name, messages=MESSAGES, temperature=0, max_tokens=5)
        assert reply.usage.completion_tokens == 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)
