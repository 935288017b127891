"""Continuous batching (`core.generation.scheduler`): answers decoded together equal answers alone.

The reference is always the unbatched path (`runtime.reply(...).run()`, what `zhllama chat` and
the one-at-a-time server run): token ids, text and finish reason, greedy and seeded sampling,
stop strings and stop ids, rows joining a running batch and rows leaving it early.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.generation.scheduler import QueueFull, Scheduler
from zhllama.core.templates import Message, get_template
from zhllama.server import ServerLimits, create_app

NAME = "tiny-zh"
PROMPTS = ["你好", "请介绍一下北京的历史和文化。", "上海", "写一首关于春天的诗，要有山有水。", "1+1等于几？", "广州"]


@pytest.fixture(scope="module")
def runtime(served_model):
    return ChatRuntime(served_model, get_template("llama2-zh"), NAME)


def _ids(runtime, prompt):
    return runtime.prompt_ids([Message("user", prompt)])


def _alone(runtime, ids, params, **kwargs):
    reply = runtime.reply(ids, params, **kwargs)
    reply.run()
    return reply


class Collector:
    """An `emit` callback: the chunks of each answer, and an event set when all of them ended."""

    def __init__(self, count: int):
        self.chunks: dict[int, list] = {i: [] for i in range(count)}
        self.ends: dict[int, object] = {}
        self.done = threading.Event()
        self.count = count

    def __call__(self, index, item):
        if item is None or isinstance(item, BaseException):
            self.ends[index] = item
            if len(self.ends) == self.count:
                self.done.set()
        else:
            self.chunks[index].append(item)

    def wait(self, timeout=60):
        assert self.done.wait(timeout), "the scheduler did not finish"

    def text(self, index):
        return "".join(self.chunks[index])


def _hold(scheduler) -> threading.Event:
    """Block the scheduler's thread (between steps) until the returned event is set."""
    gate, holding = threading.Event(), threading.Event()

    def hold():
        holding.set()
        gate.wait(60)

    scheduler.call(hold)
    assert holding.wait(30)
    return gate


def _same(got, expected):
    assert got.token_ids == expected.token_ids
    assert got.text == expected.text
    assert got.finish_reason == expected.finish_reason


@pytest.mark.slow
@pytest.mark.parametrize("sampled", [False, True])
def test_concurrent_answers_equal_answers_alone(runtime, sampled):
    params = [
        GenerationParams(max_new_tokens=8 + 3 * i, greedy=not sampled, temperature=0.9, top_k=0, seed=i)
        for i in range(len(PROMPTS))
    ]
    expected = [_alone(runtime, _ids(runtime, p), q) for p, q in zip(PROMPTS, params, strict=True)]
    scheduler = Scheduler(runtime.model, max_batch_size=8)
    gate = _hold(scheduler)  # every answer joins in the same step
    replies = [runtime.reply(_ids(runtime, p), q) for p, q in zip(PROMPTS, params, strict=True)]
    sink = Collector(len(replies))
    scheduler.submit(replies, sink)
    gate.set()
    sink.wait()
    scheduler.close()
    assert scheduler.stats.peak_batch == len(PROMPTS)
    for i, (got, want) in enumerate(zip(replies, expected, strict=True)):
        _same(got, want)
        assert sink.text(i) == want.text and sink.ends[i] is None  # streamed chunks add up to the text


@pytest.mark.slow
def test_rows_join_a_running_batch_and_leave_it(runtime):
    """A long answer is running; others join mid-way, one ends early on a stop string, one on a stop id."""
    long_params = GenerationParams(max_new_tokens=60, greedy=True)
    long_ids = _ids(runtime, PROMPTS[1])
    long_alone = _alone(runtime, long_ids, long_params)
    assert len(long_alone.token_ids) == 60
    short_ids = _ids(runtime, PROMPTS[3])
    short_alone = _alone(runtime, short_ids, GenerationParams(max_new_tokens=30, greedy=True))
    stop = short_alone.text[3:5]
    stop_params = GenerationParams(max_new_tokens=30, greedy=True, stop_strings=(stop,))
    stop_alone = _alone(runtime, short_ids, stop_params)
    assert stop_alone.finish_reason == "stop" and stop_alone.text == short_alone.text[: short_alone.text.index(stop)]
    third_ids = _ids(runtime, PROMPTS[0])
    third_plain = _alone(runtime, third_ids, GenerationParams(max_new_tokens=20, greedy=True))
    id_params = GenerationParams(max_new_tokens=20, greedy=True, stop_token_ids=(third_plain.token_ids[4],))
    id_alone = _alone(runtime, third_ids, id_params)
    assert len(id_alone.token_ids) < 20 and id_alone.finish_reason == "stop"

    scheduler = Scheduler(runtime.model, max_batch_size=4)
    long_reply = runtime.reply(long_ids, long_params)
    long_sink = Collector(1)
    scheduler.submit([long_reply], long_sink)
    deadline = time.monotonic() + 30
    while len(long_reply.token_ids) < 10:  # the long answer is well under way
        assert time.monotonic() < deadline
        time.sleep(0.001)
    others = [runtime.reply(short_ids, stop_params), runtime.reply(third_ids, id_params)]
    sink = Collector(2)
    scheduler.submit(others, sink)
    long_sink.wait()
    sink.wait()
    scheduler.close()
    _same(long_reply, long_alone)
    _same(others[0], stop_alone)
    _same(others[1], id_alone)
    assert scheduler.stats.peak_batch == 3
    assert scheduler.batch.rows == [] and scheduler.batch.cache is None  # nothing kept after the last row


@pytest.mark.slow
def test_logprobs_and_guidance_in_a_batch(runtime):
    """logprobs rows are batched; a guidance answer runs exclusively beside the batch; all equal alone."""
    params = GenerationParams(max_new_tokens=10, greedy=True)
    ids = [_ids(runtime, p) for p in PROMPTS[:3]]
    guidance = runtime.guidance(2.0, "写一首诗")
    expected = [_alone(runtime, i, params, logprobs=2) for i in ids] + [
        _alone(runtime, ids[0], params, guidance=guidance)
    ]
    replies = [runtime.reply(i, params, logprobs=2) for i in ids] + [runtime.reply(ids[0], params, guidance=guidance)]
    scheduler = Scheduler(runtime.model, max_batch_size=8)
    sink = Collector(len(replies))
    scheduler.submit(replies, sink)
    sink.wait()
    scheduler.close()
    for got, want in zip(replies, expected, strict=True):
        _same(got, want)
    for got, want in zip(replies[:3], expected[:3], strict=True):
        assert [t for t, _v, _a in got.stopper.token_logprobs] == [t for t, _v, _a in want.stopper.token_logprobs]
        for (_t, v, alts), (_t2, v2, alts2) in zip(
            got.stopper.token_logprobs, want.stopper.token_logprobs, strict=True
        ):
            assert v == pytest.approx(v2, abs=1e-4)
            assert [a for a, _ in alts] == [a for a, _ in alts2]


def test_queue_is_bounded_and_cancelled_answers_never_start(runtime):
    scheduler = Scheduler(runtime.model, max_batch_size=1, max_queue=2)
    gate = _hold(scheduler)
    params = GenerationParams(max_new_tokens=4, greedy=True)
    ids = _ids(runtime, PROMPTS[0])
    first, second = runtime.reply(ids, params), runtime.reply(ids, params)
    sinks = [Collector(1), Collector(1)]
    scheduler.submit([first], sinks[0])
    scheduler.submit([second], sinks[1])
    with pytest.raises(QueueFull, match="--max-queue 2"):
        scheduler.submit([runtime.reply(ids, params)], Collector(1))
    assert scheduler.stats.rejected == 1
    second.cancel()  # its client went away while it waited
    gate.set()
    for sink in sinks:
        sink.wait()
    assert first.token_ids and first.text == _alone(runtime, ids, params).text
    assert second.token_ids == [] and sinks[1].ends == {0: None}
    # a request larger than the queue still fits an empty queue
    many = [runtime.reply(ids, params) for _ in range(3)]
    sink = Collector(3)
    scheduler.submit(many, sink)
    sink.wait()
    scheduler.close()
    assert all(r.text == first.text for r in many)


def test_a_failing_row_fails_alone(runtime, monkeypatch):
    from zhllama.core.generation import scheduler as module

    class Broken(module.Sampler):
        def __call__(self, ids, logits):
            raise RuntimeError("probability tensor contains nan")

    params = GenerationParams(max_new_tokens=6, greedy=True)
    good = runtime.reply(_ids(runtime, PROMPTS[0]), params)
    bad = runtime.reply(_ids(runtime, PROMPTS[1]), GenerationParams(max_new_tokens=6, temperature=0.8, seed=99))
    original = module.Sampler

    def sampler(p):
        return Broken(p) if p.seed == 99 else original(p)

    monkeypatch.setattr(module, "Sampler", sampler)
    scheduler = Scheduler(runtime.model, max_batch_size=4)
    sink = Collector(2)
    gate = _hold(scheduler)
    scheduler.submit([good, bad], sink)
    gate.set()
    sink.wait()
    scheduler.close()
    assert sink.ends[0] is None and isinstance(sink.ends[1], RuntimeError)
    assert good.text == _alone(runtime, _ids(runtime, PROMPTS[0]), params).text


# ---- over HTTP -----------------------------------------------------------------------------------


async def _stream(client, url, body):
    """(text, completion tokens, saw [DONE]) of one streaming chat request."""
    text, usage, done = [], None, False
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if event.get("usage"):
                usage = event["usage"]["completion_tokens"]
            for choice in event["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text), usage, done


@pytest.mark.slow
def test_sixteen_concurrent_streams_equal_serial(runtime, live_server):
    """16 clients at once: every stream ends with [DONE]; each greedy text is the one-at-a-time text."""
    prompts = [f"{PROMPTS[i % len(PROMPTS)]}{'！' * (i // len(PROMPTS))}" for i in range(16)]
    bodies = [
        {
            "messages": [{"role": "user", "content": p}],
            "temperature": 0,
            "max_tokens": 12 + i,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for i, p in enumerate(prompts)
    ]

    async def run(url, together):
        async with httpx.AsyncClient(timeout=120) as client:
            if together:
                return await asyncio.gather(*(_stream(client, url, b) for b in bodies))
            return [await _stream(client, url, b) for b in bodies]

    serial_app = create_app(runtime, GenerationParams(), limits=ServerLimits(max_batch_size=1))
    with live_server(serial_app) as url:
        serial = asyncio.run(run(url, together=False))
    serial_app.state.server.close()
    app = create_app(runtime, GenerationParams(), limits=ServerLimits(max_batch_size=16))
    with live_server(app) as url:
        batched = asyncio.run(run(url, together=True))
    stats = app.state.server.scheduler.stats
    app.state.server.close()
    assert all(done for _t, _u, done in batched)
    assert batched == serial
    for (_text, usage, _done), body in zip(batched, bodies, strict=True):
        assert usage == body["max_tokens"]
    assert stats.peak_batch > 1  # they really were decoded together


def test_full_queue_is_a_429_in_openai_shape(runtime, live_server):
    import openai

    app = create_app(runtime, GenerationParams(max_new_tokens=4), limits=ServerLimits(max_batch_size=1, max_queue=1))
    scheduler = app.state.server.scheduler
    gate = _hold(scheduler)
    body = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
    with live_server(app) as url:
        results = {}

        def first():
            results["first"] = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)

        thread = threading.Thread(target=first)
        thread.start()
        deadline = time.monotonic() + 30
        while scheduler.queued < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        full = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=NAME, **body)
        gate.set()
        thread.join(60)
        assert results["first"].status_code == 200
        assert results["first"].json()["usage"]["completion_tokens"] == 2
    app.state.server.close()
    assert full.status_code == 429 and full.headers["retry-after"] == "1"
    error = full.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "rate_limit_exceeded"
    assert "--max-queue 1" in error["message"]


@pytest.mark.parametrize("temperature", [1e-300, 5e-324])
def test_temperature_near_zero_draws_the_best_token(temperature):
    """Scaled scores overflow float32 there; the draw is the T -> 0 limit (argmax), not a NaN error."""
    import torch

    from zhllama.core.generation.sampling import Sampler

    logits = torch.tensor([1.0, 3.0, -2.0, 2.5])
    for top_p in (1.0, 0.5):
        sampler = Sampler(GenerationParams(temperature=temperature, top_p=top_p, top_k=0, repetition_penalty=1.0))
        assert [sampler([0], logits) for _ in range(5)] == [1] * 5
    boosted = Sampler(GenerationParams(temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1e-300))
    assert boosted([0, 3], logits) in (0, 3)  # the seen tokens' scores overflow to +inf: one of them
    normal = Sampler(GenerationParams(temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=4))
    torch_draw = torch.multinomial(
        torch.softmax(logits / 0.7, -1), 1, generator=torch.Generator().manual_seed(4)
    )  # unchanged where nothing overflows
    assert normal([0], logits) == int(torch_draw)


def test_greedy_rows_chosen_together_equal_their_own_samplers():
    import torch

    from zhllama.core.generation.sampling import Sampler, greedy_tokens

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=generator) * 3
    sequences = [[1, 2, 2, 7], [3], [4, 4, 4, 9, 10, 11], [0, 49], [5, 6]]
    logits[0, 2] = logits[0].max() + 0.05  # a repeated id that the penalty must push below another
    penalties = [1.1, 1.0, 0.7, 2.0, 1.3]
    expected = [
        Sampler(GenerationParams(greedy=True, repetition_penalty=p))(s, logits[r])
        for r, (s, p) in enumerate(zip(sequences, penalties, strict=True))
    ]
    assert greedy_tokens(sequences, logits, penalties) == expected
    assert expected[0] != 2  # the penalty changed the choice there


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"
)
def test_llama_cpp_answers_run_one_at_a_time(tiny_zh_model, tmp_path):
    """Engines without a batched forward keep serial serving: concurrent answers run one after the
    other through `Reply` (never interleaved on llama.cpp's single context) and equal answers alone."""
    from zhllama.core.engine import open_model
    from zhllama.core.loading import ModelOptions
    from zhllama.core.quantize.gguf_export import write_gguf

    path = tmp_path / "tiny-f32.gguf"
    write_gguf(tiny_zh_model, path, "F32")
    model = open_model(ModelOptions(model=str(path), context_length=256))
    try:
        runtime = ChatRuntime(model, get_template("llama2-zh"), NAME)
        params = GenerationParams(max_new_tokens=10, greedy=True)
        ids = [_ids(runtime, p) for p in PROMPTS[:3]]
        expected = [_alone(runtime, i, params) for i in ids]
        scheduler = Scheduler(model, max_batch_size=8)
        assert not scheduler.batchable
        active, overlap = [], []
        original = model.generate

        def tracking(*args, **kwargs):
            overlap.append(len(active))
            active.append(1)
            try:
                yield from original(*args, **kwargs)
            finally:
                active.pop()

        model.generate = tracking
        replies = [runtime.reply(i, params) for i in ids]
        sink = Collector(len(replies))
        scheduler.submit(replies, sink)
        sink.wait()
        scheduler.close()
        assert overlap == [0, 0, 0]  # each answer started with no other one open
        for i, (got, want) in enumerate(zip(replies, expected, strict=True)):
            _same(got, want)
            assert sink.text(i) == want.text
    finally:
        model.close()


def test_non_streaming_client_that_gives_up_cancels_its_answer(runtime, live_server):
    app = create_app(runtime, GenerationParams(max_new_tokens=4000, greedy=True), limits=ServerLimits(max_tokens=4000))
    scheduler = app.state.server.scheduler
    with live_server(app) as url:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/v1/completions", json={"prompt": "北京", "max_tokens": 4000}, timeout=1.0)
        deadline = time.monotonic() + 10
        while scheduler.batch.rows or scheduler.queued:
            assert time.monotonic() < deadline, "the answer went on after its client left"
            time.sleep(0.05)
        assert scheduler.stats.steps < 4000
    app.state.server.close()


def test_a_row_the_sampler_refuses_fails_alone_and_the_thread_lives(runtime, monkeypatch):
    from zhllama.core.generation import scheduler as module

    original = module.Sampler

    def sampler(p):
        if p.seed == 77:
            raise ValueError("top_k has to be a strictly positive integer")
        return original(p)

    monkeypatch.setattr(module, "Sampler", sampler)
    params = GenerationParams(max_new_tokens=5, greedy=True)
    scheduler = Scheduler(runtime.model, max_batch_size=4)
    good, refused = (
        runtime.reply(_ids(runtime, PROMPTS[0]), params),
        runtime.reply(_ids(runtime, PROMPTS[1]), GenerationParams(max_new_tokens=5, greedy=True, seed=77)),
    )
    sink = Collector(2)
    scheduler.submit([good, refused], sink)
    sink.wait()
    assert sink.ends[0] is None and isinstance(sink.ends[1], ValueError)
    again = runtime.reply(_ids(runtime, PROMPTS[0]), params)
    sink = Collector(1)
    scheduler.submit([again], sink)  # the scheduler's thread still serves
    sink.wait()
    scheduler.close()
    assert again.text == good.text == _alone(runtime, _ids(runtime, PROMPTS[0]), params).text
