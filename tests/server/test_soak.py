"""Soak: 1000 mixed requests against a live loopback server, 8 at a time, bounded in count and time.

The mix (fixed seed): chat and completions, streaming and not, `n: 2`, embeddings, bad JSON, bad
fields, unknown model, too large bodies, clients that disconnect mid-stream and clients that give
up on a non-streaming answer. Checked: no 500 anywhere; every stream read to its end either
completes (`[DONE]` after a finish_reason per choice) or ends with an error event then `[DONE]`;
after the run the scheduler holds no row, queued answer or cache; resident memory after the
warm-up (the first 200 requests) grows by less than 10%.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time

import httpx
import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import get_template
from zhllama.server import ServerLimits, create_app

NAME = "tiny-zh"
TOTAL = 1000
WARMUP = 200
CONCURRENCY = 8
PROMPTS = ["你好", "北京是", "请介绍一下上海。", "写一首诗", "1+1=?", "广州的早茶"]
KINDS = {
    "chat": 16,
    "chat_stream": 16,
    "completion": 10,
    "completion_stream": 10,
    "n2_stream": 5,
    "embedding": 6,
    "bad_json": 6,
    "bad_field": 6,
    "wrong_model": 3,
    "too_large": 3,
    "disconnect": 12,
    "give_up": 4,
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _plan(count: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=count)
    return [(kind, rng.choice(PROMPTS)) for kind in kinds]


def _events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.strip()]


def _check_stream(events: list[str], choices: int) -> str:
    """'complete' or 'error'; anything else fails the test."""
    assert events and events[-1] == "data: [DONE]", events[-3:]
    payloads = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    if "error" in payloads[-1]:
        assert payloads[-1]["error"]["type"] != "server_error", payloads[-1]
        return "error"
    finished = {c["index"] for p in payloads for c in p["choices"] if c.get("finish_reason")}
    assert finished == set(range(choices)), payloads[-2:]
    return "complete"


async def _request(client: httpx.AsyncClient, kind: str, prompt: str, stats: dict) -> None:
    chat = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
    completion = {"prompt": prompt, "max_tokens": 8, "temperature": 0.8, "seed": 3}
    if kind in ("chat", "completion", "embedding", "bad_field", "wrong_model"):
        route, body = {
            "chat": ("/v1/chat/completions", chat),
            "completion": ("/v1/completions", completion),
            "embedding": ("/v1/embeddings", {"input": [prompt, "上海"]}),
            "bad_field": ("/v1/chat/completions", {**chat, "temperature": "hot", "tools": [{"x": 1}]}),
            "wrong_model": ("/v1/completions", {**completion, "model": "gpt-4"}),
        }[kind]
        response = await client.post(route, json=body)
        stats["status"][response.status_code] = stats["status"].get(response.status_code, 0) + 1
        expected = {"bad_field": 400, "wrong_model": 404}.get(kind, 200)
        assert response.status_code == expected, response.text
        response.json()
        return
    if kind == "bad_json":
        response = await client.post("/v1/chat/completions", content=b'{"messages": [', headers={"x": "y"})
        assert response.status_code == 400 and response.json()["error"]["message"]
        return
    if kind == "too_large":
        response = await client.post("/v1/completions", content=b'{"prompt": "' + b"x" * 70000 + b'"}')
        assert response.status_code == 413
        return
    if kind == "give_up":
        try:
            await client.post("/v1/completions", json={**completion, "max_tokens": 16}, timeout=0.005)
        except httpx.TimeoutException:
            stats["gave_up"] += 1
        return
    body = {**(chat if kind != "completion_stream" else completion), "stream": True}
    if kind == "n2_stream":
        body = {**body, "n": 2, "temperature": 0.7}
    if kind == "disconnect":
        body = {**body, "max_tokens": 16}
    async with client.stream(
        "POST", "/v1/chat/completions" if "completion" not in kind else "/v1/completions", json=body
    ) as r:
        assert r.status_code == 200, await r.aread()
        if kind == "disconnect":
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    stats["disconnected"] += 1
                    return  # leaving the block closes the connection mid-stream
        text = (await r.aread()).decode()
    stats[_check_stream(_events(text), 2 if kind == "n2_stream" else 1)] += 1


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the run: a tiny model gains nothing from more, and on a
    loaded 2-core machine two spinning OpenMP threads make each step ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_thousand_mixed_requests_hold(served_model, live_server, one_thread):
    runtime = ChatRuntime(served_model, get_template("llama2-zh"), NAME)
    limits = ServerLimits(max_tokens=16, max_request_bytes=1 << 16, max_batch_size=8, max_queue=256)
    app = create_app(runtime, GenerationParams(max_new_tokens=8), limits=limits)
    scheduler = app.state.server.scheduler
    plan = _plan(TOTAL)
    stats = {"status": {}, "complete": 0, "error": 0, "disconnected": 0, "gave_up": 0}
    marks = {}

    async def run(url):
        queue: asyncio.Queue = asyncio.Queue()
        for i, item in enumerate(plan):
            queue.put_nowait((i, item))
        done = 0
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def worker():
                nonlocal done
                while not queue.empty():
                    _i, (kind, prompt) = queue.get_nowait()
                    await _request(client, kind, prompt, stats)
                    done += 1
                    if done == WARMUP:
                        gc.collect()
                        marks["warm"] = rss_bytes()

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    start = time.monotonic()
    with live_server(app) as url:
        asyncio.run(run(url))
        deadline = time.monotonic() + 30
        while scheduler.batch.rows or scheduler.queued or scheduler.exclusive:
            assert time.monotonic() < deadline, "answers left running after their clients went away"
            time.sleep(0.05)
        gc.collect()
        marks["end"] = rss_bytes()
    app.state.server.close()
    elapsed = time.monotonic() - start
    assert 500 not in stats["status"]
    assert stats["complete"] > 100 and stats["disconnected"] > 50, stats
    assert scheduler.batch.cache is None and scheduler.stats.peak_batch > 1
    growth = marks["end"] / marks["warm"] - 1
    print(f"soak: {TOTAL} requests in {elapsed:.1f} s, RSS {marks['warm'] >> 20} -> {marks['end'] >> 20} MiB, {stats}")
    assert growth < 0.10, f"RSS grew {growth:.1%} after warm-up"
