"""Every request field honoured or refused by name; embeddings as CLA2 computes them; stream errors."""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message, get_template
from zhllama.server import ServerLimits, create_app

NAME = "tiny-zh"
KEY = "sekret"
MESSAGES = [{"role": "user", "content": "你好，请介绍一下北京。"}]


@pytest.fixture(scope="module")
def runtime(served_model):
    return ChatRuntime(served_model, get_template("llama2-zh"), NAME)


@pytest.fixture(scope="module")
def url(runtime, live_server):
    app = create_app(runtime, GenerationParams(max_new_tokens=16), limits=ServerLimits(max_tokens=64))
    with live_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def _direct(runtime, ids, **params):
    reply = runtime.reply(ids, GenerationParams(**params))
    reply.run()
    return reply


def _chat_ids(runtime):
    return runtime.prompt_ids([Message("user", MESSAGES[0]["content"])])


def _reference_embedding(model, text):
    """CLA2's get_embedding, written out: mean of the last hidden state over tokens, L2-normalised."""
    import torch

    ids = torch.tensor([model.tokenizer.encode(text, bos=True)])
    with torch.no_grad():
        hidden = model.model(ids, output_hidden_states=True).hidden_states[-1][0]
    mean = hidden.mean(dim=0)
    return (mean / mean.norm()).tolist()


def test_embeddings_pool_like_cla2(client, runtime, url):
    texts = ["北京是中国的首都。", "上海是一座港口城市，人口很多。", "猫"]
    response = client.embeddings.create(model=NAME, input=texts)  # the client asks for base64
    floats = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "encoding_format": "float"}).json()
    assert [d.index for d in response.data] == [0, 1, 2]
    for i, text in enumerate(texts):
        expected = _reference_embedding(runtime.model, text)
        got = response.data[i].embedding
        assert len(got) == len(expected) == runtime.model.model.config.hidden_size
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-5
        assert floats["data"][i]["embedding"] == pytest.approx(got, abs=1e-6)
        assert math.isclose(sum(v * v for v in got), 1.0, rel_tol=1e-5)
    tokens = sum(len(runtime.model.tokenizer.encode(t, bos=True)) for t in texts)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    single = client.embeddings.create(model=NAME, input=texts[2], encoding_format="float")
    assert single.data[0].embedding == pytest.approx(response.data[2].embedding, abs=1e-5)  # batching-independent
    bad = httpx.post(f"{url}/v1/embeddings", json={"input": ""})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    bad = httpx.post(f"{url}/v1/embeddings", json={"input": "x", "encoding_format": "int8"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "encoding_format"


def test_vendor_and_sampling_fields_are_honoured(client, runtime):
    ids = _chat_ids(runtime)
    for extra in ({"top_k": 1}, {"repetition_penalty": 1.0}, {"repetition_penalty": 1.5, "top_k": 3}):
        got = client.chat.completions.create(
            model=NAME, messages=MESSAGES, temperature=0.9, seed=3, max_tokens=10, extra_body=extra
        )
        params = {
            "max_new_tokens": 10,
            "temperature": 0.9,
            "seed": 3,
            "top_p": 0.9,
            "top_k": 40,
            "repetition_penalty": 1.1,
        }
        params.update(extra)
        assert got.choices[0].message.content == _direct(runtime, ids, **params).text


def test_n_choices_use_consecutive_seeds(client, runtime):
    ids = _chat_ids(runtime)
    got = client.chat.completions.create(model=NAME, messages=MESSAGES, temperature=1.0, seed=7, max_tokens=8, n=3)
    assert [c.index for c in got.choices] == [0, 1, 2]
    base = {"max_new_tokens": 8, "temperature": 1.0}
    expected = [_direct(runtime, ids, seed=7 + i, **base) for i in range(3)]
    assert [c.message.content for c in got.choices] == [r.text for r in expected]
    assert got.usage.prompt_tokens == len(ids)
    assert got.usage.completion_tokens == sum(len(r.token_ids) for r in expected)
    streamed = client.chat.completions.create(
        model=NAME, messages=MESSAGES, temperature=1.0, seed=7, max_tokens=8, n=2, stream=True
    )
    texts = ["", ""]
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [r.text for r in expected[:2]]


def test_logprobs_are_the_models_own(client, runtime):
    import torch

    got = client.chat.completions.create(
        model=NAME, messages=MESSAGES, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    content = got.choices[0].logprobs.content
    ids = _chat_ids(runtime)
    generated = _direct(runtime, ids, max_new_tokens=6, greedy=True, repetition_penalty=1.1).token_ids
    with torch.no_grad():
        logits = runtime.model.model(torch.tensor([ids + generated])).logits[0].float()
    logp = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)
    assert len(content) == len(generated)
    for step, (entry, token) in enumerate(zip(content, generated, strict=True)):
        assert entry.logprob == pytest.approx(float(logp[step, token]), abs=1e-4)
        top = torch.topk(logp[step], 3)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-4)
    text = client.completions.create(model=NAME, prompt="北京", temperature=0, max_tokens=4, logprobs=2)
    assert len(text.choices[0].logprobs.token_logprobs) == text.usage.completion_tokens
    assert all(len(t) <= 2 for t in text.choices[0].logprobs.top_logprobs)


def test_completions_echo_and_list_prompts(client):
    one = client.completions.create(model=NAME, prompt="北京是", temperature=0, max_tokens=6).choices[0].text
    echoed = client.completions.create(model=NAME, prompt="北京是", temperature=0, max_tokens=6, echo=True)
    assert echoed.choices[0].text == "北京是" + one
    two = client.completions.create(model=NAME, prompt=["北京是", "上海"], temperature=0, max_tokens=6)
    other = client.completions.create(model=NAME, prompt="上海", temperature=0, max_tokens=6).choices[0].text
    assert [c.text for c in two.choices] == [one, other]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES, "seed": 2**64}, "seed"),
        ({"messages": [{"role": "system", "content": "只有系统消息"}]}, "messages"),
        ({"messages": MESSAGES, "model": 5}, "model"),
        ({"messages": MESSAGES, "frequency_penalty": 0.5}, "frequency_penalty"),
        ({"messages": MESSAGES, "logit_bias": {"5": 10}}, "logit_bias"),
        ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"messages": MESSAGES, "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": MESSAGES, "n": 99}, "n"),
        ({"messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": MESSAGES, "stream": True, "logprobs": True}, "logprobs"),
        ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": MESSAGES, "wibble": 1}, "wibble"),
        ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
        ({"messages": MESSAGES, "negative_prompt": "x"}, "negative_prompt"),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_unsupported_or_bad_fields_are_400_naming_them(url, body, param):
    for stream in (False,) if "stream_options" in body else (False, True):
        response = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": body.get("stream", stream)})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert param.split("[")[0] in error["message"]


def test_neutral_values_and_unknown_model_types(url):
    ok = httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "messages": MESSAGES,
            "max_tokens": 2,
            "frequency_penalty": 0,
            "presence_penalty": 0.0,
            "user": "u",
            "response_format": {"type": "text"},
            "n": 1,
            "seed": 2**63 - 1,
        },
    )
    assert ok.status_code == 200, ok.text
    lone = b'{"messages": [{"role": "user", "content": "\\ud800"}], "stream": true}'
    response = httpx.post(f"{url}/v1/chat/completions", content=lone, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].content"
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "北京", "suffix": "尾巴"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "suffix"
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "北京", "echo": True, "logprobs": 1})
    assert response.status_code == 400 and response.json()["error"]["param"] == "echo"


def test_guidance_fields(client, runtime):
    ids = _chat_ids(runtime)
    got = client.chat.completions.create(
        model=NAME,
        messages=MESSAGES,
        temperature=0,
        max_tokens=8,
        extra_body={"guidance_scale": 2.0, "negative_prompt": "写一首诗"},
    )
    guidance = runtime.guidance(2.0, "写一首诗")
    reply = runtime.reply(ids, GenerationParams(max_new_tokens=8, temperature=0, greedy=True), guidance=guidance)
    assert got.choices[0].message.content == reply.run()


def test_error_after_the_stream_started_is_an_event_then_done(runtime, monkeypatch, live_server):
    from zhllama.core.generation.batch import DecodeBatch

    original = DecodeBatch.forward
    steps = []

    def failing(self):
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("disk on fire")
        return original(self)

    monkeypatch.setattr(DecodeBatch, "forward", failing)
    app = create_app(runtime, GenerationParams(max_new_tokens=30, greedy=True))
    with live_server(app) as base:
        raw = httpx.post(f"{base}/v1/chat/completions", json={"messages": MESSAGES, "stream": True})
    events = [e for e in raw.text.split("\n\n") if e]
    assert raw.status_code == 200 and events[-1] == "data: [DONE]"
    error = json.loads(events[-2][len("data: ") :])["error"]
    assert "disk on fire" in error["message"] and error["type"] == "server_error"
    assert any('"content"' in e for e in events[:-2])  # text went out before the failure


def test_docs_and_openapi_behind_the_key(runtime, live_server):
    with live_server(create_app(runtime, api_key=KEY)) as base:
        for path in ("/openapi.json", "/docs"):
            assert httpx.get(f"{base}{path}").status_code == 401
            assert httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        spec = httpx.get(f"{base}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert "/v1/embeddings" in spec["paths"] and "/v1/chat/completions" in spec["paths"]
    with live_server(create_app(runtime)) as base:
        assert httpx.get(f"{base}/openapi.json").status_code == 200


def test_streamed_echo_and_usage_with_two_prompts(client):
    full = client.completions.create(model=NAME, prompt=["北京是", "上海"], temperature=0, max_tokens=5, echo=True)
    stream = client.completions.create(
        model=NAME,
        prompt=["北京是", "上海"],
        temperature=0,
        max_tokens=5,
        echo=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, usage = ["", ""], None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
        usage = chunk.usage or usage
    assert texts == [c.text for c in full.choices] and texts[1].startswith("上海")
    assert usage.completion_tokens == full.usage.completion_tokens == 10
    assert usage.prompt_tokens == full.usage.prompt_tokens
