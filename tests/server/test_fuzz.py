"""Request-schema fuzzing (hypothesis): no body sent to chat/completions/embeddings gets a 500.

Bodies mix plausible values of every OpenAI field with arbitrary JSON (huge integers, NaN and
Infinity as Python's json writes them, lone surrogates, nested junk, unknown keys) and raw bytes.
Every answer must be a 2xx, or a 4xx in OpenAI's error shape; a stream must end with `[DONE]` and
carry no server-error event. Examples are derandomized: CI runs the same bodies every time.
"""

from __future__ import annotations

import json

import httpx
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from zhllama.core.engine import GenerationParams  # noqa: E402
from zhllama.core.generation.runtime import ChatRuntime  # noqa: E402
from zhllama.core.templates import get_template  # noqa: E402
from zhllama.server import ServerLimits, create_app  # noqa: E402

NAME = "tiny-zh"
EXAMPLES = 120

surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
texts = st.text(max_size=24) | st.sampled_from(["你好", "北京是", "</s>", "[INST]", ""]) | surrogates
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
junk = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12
)
numbers = st.sampled_from([0, 0.0, 1, 1e-300, 5e-324, 0.5, 2, 2.0000001, -1, 10, 1e308, 2**31, 2**63, -(2**63)])
small_ints = st.integers(min_value=-3, max_value=12) | st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])
token_ids = st.lists(st.integers(min_value=-2, max_value=2000) | st.sampled_from([2**40, 0, 1, 2]), max_size=6)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "User", ""])
parts = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio"]), "text": texts}) | junk,
    max_size=3,
)
message = st.fixed_dictionaries(
    {"role": roles | junk, "content": texts | parts | junk},
    optional={"name": texts | junk, "tool_calls": junk, "refusal": st.none() | texts},
)
conversation = st.lists(message, min_size=0, max_size=4) | st.builds(
    lambda user, first: ([first] if first else []) + [{"role": "user", "content": user}],
    texts,
    st.none() | message,
)


def _maybe(value):
    return value | junk


COMMON = {
    "model": _maybe(st.sampled_from([NAME, "gpt-4", ""])),
    "user": _maybe(texts),
    "stream": _maybe(st.booleans()),
    "stream_options": _maybe(st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | junk})),
    "max_tokens": _maybe(small_ints),
    "temperature": _maybe(numbers),
    "top_p": _maybe(numbers),
    "top_k": _maybe(small_ints),
    "repetition_penalty": _maybe(numbers),
    "n": _maybe(small_ints),
    "seed": _maybe(small_ints),
    "stop": _maybe(texts | st.lists(texts, max_size=6)),
    "guidance_scale": _maybe(numbers),
    "negative_prompt": _maybe(texts),
    "frequency_penalty": _maybe(numbers),
    "logit_bias": junk,
    "response_format": _maybe(st.just({"type": "text"})),
}
CHAT = {
    **COMMON,
    "messages": conversation | junk,
    "max_completion_tokens": _maybe(small_ints),
    "logprobs": _maybe(st.booleans()),
    "top_logprobs": _maybe(small_ints),
    "tools": junk,
}
COMPLETION = {
    **COMMON,
    "prompt": _maybe(texts | st.lists(texts, max_size=3) | token_ids | st.lists(token_ids, max_size=3)),
    "logprobs": _maybe(small_ints),
    "echo": _maybe(st.booleans()),
    "suffix": junk,
}
EMBEDDING = {
    "model": COMMON["model"],
    "input": _maybe(texts | st.lists(texts, max_size=4) | token_ids | st.lists(token_ids, max_size=3)),
    "encoding_format": _maybe(st.sampled_from(["float", "base64", "binary"])),
    "dimensions": _maybe(small_ints | st.just(64)),
    "user": COMMON["user"],
}


plain = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["你好", "北京是", "</s>", "[INST]"])
edge = st.sampled_from([1e-300, 5e-324, 1e-30])  # tiny but valid: scaled logits overflow float32
VALID_COMMON = {
    "model": st.just(NAME),
    "max_tokens": st.integers(1, 8),
    "temperature": st.sampled_from([0, 0.5, 1.0, 2.0]) | edge,
    "top_p": st.sampled_from([0.5, 1.0]) | edge,
    "top_k": st.sampled_from([0, 1, 5, 2**31]),
    "repetition_penalty": st.sampled_from([0.5, 1.0, 1.3, 10.0]) | edge,
    "n": st.integers(1, 3),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": plain.filter(bool) | st.lists(plain.filter(bool), max_size=4),
    "stream": st.booleans(),
    "user": plain,
}
VALID_CHAT = {
    **VALID_COMMON,
    "messages": st.builds(
        lambda system, user: (
            ([{"role": "system", "content": system}] if system is not None else [])
            + [{"role": "user", "content": user}]
        ),
        st.none() | plain,
        plain,
    ),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
}
VALID_COMPLETION = {
    **VALID_COMMON,
    "prompt": plain.filter(bool)
    | st.lists(plain.filter(bool), min_size=1, max_size=2)
    | st.lists(st.integers(0, 400), min_size=1, max_size=6),
    "echo": st.booleans(),
    "logprobs": st.integers(0, 5),
}
VALID_EMBEDDING = {
    "model": st.just(NAME),
    "input": plain.filter(bool) | st.lists(plain.filter(bool), min_size=1, max_size=3),
    "encoding_format": st.sampled_from(["float", "base64"]),
    "dimensions": st.just(64),
}


def _valid(fields: dict, required: tuple[str, ...]):
    return st.fixed_dictionaries(
        {k: fields[k] for k in required}, optional={k: v for k, v in fields.items() if k not in required}
    )


def _mutate(body: dict, key: str, value) -> dict:
    return {**body, key: value}


def bodies(fields: dict, required: tuple[str, ...], valid: dict):
    """Raw request bodies: plausible ones (all fields valid, or one replaced by junk), JSON objects
    built from `fields` plus unknown keys, JSON non-objects, and bytes."""
    good = _valid(valid, required)
    one_bad = st.builds(_mutate, good, st.sampled_from(sorted(fields)), junk)
    shaped = st.builds(
        lambda body, more, add: {**body, **more} if add else body,
        _valid(fields, required),
        st.dictionaries(texts, junk, max_size=2),
        st.booleans(),
    )
    encoded = (good | good | one_bad | shaped).map(lambda body: json.dumps(body).encode())  # NaN, surrogates too
    return (
        encoded
        | junk.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
        | st.sampled_from([b"", b"{", b"null", b"[]", b'{"messages": [', b"\xff\xfe{}"])
    )


@pytest.fixture(scope="module")
def url(served_model, live_server):
    runtime = ChatRuntime(served_model, get_template("llama2-zh"), NAME)
    limits = ServerLimits(max_tokens=8, max_request_bytes=1 << 16, max_batch_size=4)
    app = create_app(runtime, GenerationParams(max_new_tokens=4), limits=limits)
    with live_server(app) as base:
        yield base
    app.state.server.close()


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


def check(response: httpx.Response) -> None:
    hypothesis.event(f"status {response.status_code}")
    assert response.status_code != 500, response.text
    assert response.status_code in (200, 400, 404, 413, 429), response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [e for e in response.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]", response.text
        for event in events[:-1]:
            payload = json.loads(event[len("data: ") :])
            assert payload.get("error", {}).get("type") != "server_error", payload
    else:
        assert "error" not in response.json()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.mark.slow
@FUZZ
@given(body=bodies(CHAT, ("messages",), VALID_CHAT))
def test_chat_bodies_never_500(http, body):
    check(http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"}))


@pytest.mark.slow
@FUZZ
@given(body=bodies(COMPLETION, ("prompt",), VALID_COMPLETION))
def test_completion_bodies_never_500(http, body):
    check(http.post("/v1/completions", content=body, headers={"content-type": "application/json"}))


@pytest.mark.slow
@settings(FUZZ, max_examples=EXAMPLES // 2)
@given(body=bodies(EMBEDDING, ("input",), VALID_EMBEDDING))
def test_embedding_bodies_never_500(http, body):
    check(http.post("/v1/embeddings", content=body, headers={"content-type": "application/json"}))
