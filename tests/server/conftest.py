"""Fixtures for the HTTP server tests: the tiny Chinese model, loaded once per session."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest


@pytest.fixture(scope="session")
def served_model(tiny_zh_model):
    from zhllama.core.engine import open_model

    model = open_model(tiny_zh_model)
    yield model
    model.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _live_server(app):
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="session")
def live_server():
    return _live_server


@pytest.fixture(scope="session")
def free_port():
    return _free_port
