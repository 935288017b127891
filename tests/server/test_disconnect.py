"""`zhllama serve`: a streaming client that goes away stops its generation (no sleeps as judges).

The test watches the scheduler's own record of the answer (its `Ticket`): the answer ended because its
reply was cancelled, long before its token limit; the server then still answers, and the next request
costs exactly its own decode steps (nothing of the abandoned answer ran in between).
"""

from __future__ import annotations

import time

import httpx
import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import get_template
from zhllama.server import ServerLimits, create_app

LIMIT = 4000


@pytest.fixture(scope="module")
def runtime(served_model):
    return ChatRuntime(served_model, get_template("llama2-zh"), "tiny-zh")


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after a generous `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_client_disconnect_stops_generation(runtime, live_server, monkeypatch):
    prompt_ids = runtime.completion_ids("北京")
    plain = list(runtime.model.generate(prompt_ids, GenerationParams(max_new_tokens=300, greedy=True)))
    assert len(plain) == 300  # without a disconnect this prompt runs to the limit
    app = create_app(
        runtime, GenerationParams(max_new_tokens=LIMIT, greedy=True), limits=ServerLimits(max_tokens=LIMIT)
    )
    scheduler = app.state.server.scheduler
    tickets = []
    submit = scheduler.submit

    def recording_submit(replies, emit):
        tickets.extend(submit(replies, emit))
        return tickets[-len(replies) :]

    monkeypatch.setattr(scheduler, "submit", recording_submit)
    try:
        with live_server(app) as url:
            with httpx.stream(
                "POST", f"{url}/v1/completions", json={"prompt": "北京", "max_tokens": LIMIT, "stream": True}
            ) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        break  # the first chunk arrived: the answer is running; leave
            (ticket,) = tickets
            wait_until(lambda: ticket.ended, "generation went on after the client left")
            assert ticket.reply.cancelled  # ended by the disconnect, not by finishing
            assert 0 < len(ticket.reply.token_ids) < 300  # stopped long before the limit
            assert not scheduler.batch.rows and scheduler.queued == 0 and scheduler.exclusive is None
            steps = scheduler.stats.steps
            assert steps < 300
            # the server still answers, and only this request's steps run from here on
            reply = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 2, "temperature": 0})
            assert reply.json()["usage"]["completion_tokens"] == 2
            assert len(tickets) == 2 and tickets[1].ended and not tickets[1].reply.cancelled
            assert scheduler.stats.steps == steps + 2
    finally:
        app.state.server.close()
